"""Local-deblurring metrics (PSNR/SSIM inside and outside the blur mask, BladeNet's and ReLoBlur's protocols)
against their definitions written out in NumPy, and the optical-flow blur mask, down to `deblurstack test`."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from skimage import data

from deblurstack import Pair, resolve_config, write_image
from deblurstack.cli import main
from deblurstack.registry import get_plugin_manager
from deblurstack.testing import check_component

PROTOCOLS = ("official", "mask_area")
SIZE = (64, 48)  # width, height


def build(kind: str, name: str, **params):
    """A component built from its registry record, as a config would build it."""
    return get_plugin_manager().get(kind, name).record.load_factory()(**params)


def photo(name: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A real RGB uint8 photo from skimage.data, downsized to ``size`` (width, height)."""
    return cv2.resize(getattr(data, name)(), size, interpolation=cv2.INTER_AREA)


def degrade(image: np.ndarray, seed: int = 0) -> np.ndarray:
    """Gaussian blur plus Gaussian noise, back to uint8."""
    blurred = cv2.GaussianBlur(image.astype(np.float64), (5, 5), 1.2)
    noisy = blurred + np.random.default_rng(seed).normal(0.0, 6.0, image.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def tensor(*images: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 arrays -> ``B x 3 x H x W`` float32 in [0, 1]."""
    batch = np.stack([image.astype(np.float32) / 255 for image in images])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def masks(*regions: np.ndarray) -> torch.Tensor:
    """``H x W`` bool regions -> a ``B x 1 x H x W`` float blur mask, as a dataset batch carries it."""
    return torch.from_numpy(np.stack(regions).astype(np.float32)).unsqueeze(1)


def ellipse(size: tuple[int, int] = SIZE, centre=(40, 20), axes=(14, 9)) -> np.ndarray:
    """A filled ellipse (the shape of a moving object) as an ``H x W`` bool region."""
    region = np.zeros(size[::-1], np.uint8)
    cv2.ellipse(region, centre, axes, 0, 0, 360, 1, -1)
    return region.astype(bool)


# ------------------------------------------------------------------ the definitions, by hand in NumPy


def psnr_of(mse: float) -> float:
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def official_psnr(x: np.ndarray, y: np.ndarray, region: np.ndarray) -> float:
    """BladeNet: both images zeroed outside the region, MSE over every value of the whole image."""
    keep = region[..., None].astype(np.float64)
    return psnr_of(np.mean((x * keep - y * keep) ** 2))


def mask_area_psnr(x: np.ndarray, y: np.ndarray, region: np.ndarray) -> float:
    """ReLoBlur/LBAG: squared error summed over the region / (region area x 3)."""
    error = (x.astype(np.float64) - y.astype(np.float64)) ** 2
    return psnr_of(error[region].sum() / (region.sum() * 3))


def ssim_maps(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The MATLAB/BasicSR SSIM map per channel (11x11 Gaussian, sigma 1.5, valid part), ``H-10 x W-10 x 3``."""
    window = cv2.getGaussianKernel(11, 1.5) @ cv2.getGaussianKernel(11, 1.5).T
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    maps = []
    for channel in range(3):
        a, b = x[..., channel].astype(np.float64), y[..., channel].astype(np.float64)

        def blur(v):
            return cv2.filter2D(v, -1, window)[5:-5, 5:-5]

        ma, mb = blur(a), blur(b)
        va, vb, cov = blur(a * a) - ma**2, blur(b * b) - mb**2, blur(a * b) - ma * mb
        maps.append(((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return np.stack(maps, axis=-1)


def official_ssim(x: np.ndarray, y: np.ndarray, region: np.ndarray) -> float:
    """BladeNet: both images zeroed outside the region, then the whole-image SSIM."""
    keep = region[..., None].astype(np.float64)
    return float(ssim_maps(x * keep, y * keep).mean())


def mask_area_ssim(x: np.ndarray, y: np.ndarray, region: np.ndarray) -> float:
    """ReLoBlur/LBAG: the SSIM map of the whole images averaged over the region (valid part), then over channels."""
    inner = region[5:-5, 5:-5]
    return float(np.mean([channel[inner].mean() for channel in np.moveaxis(ssim_maps(x, y), -1, 0)]))


REFERENCES = {
    ("local_psnr", "official"): official_psnr,
    ("local_psnr", "mask_area"): mask_area_psnr,
    ("local_ssim", "official"): official_ssim,
    ("local_ssim", "mask_area"): mask_area_ssim,
}


@pytest.fixture(scope="module")
def pair():
    """Two photos, their degraded versions and two partial regions."""
    targets = [photo("astronaut"), photo("chelsea")]
    outputs = [degrade(targets[0]), degrade(targets[1], seed=1)]
    regions = [ellipse(), ellipse(centre=(20, 30), axes=(10, 12)) | ellipse(centre=(55, 8), axes=(6, 5))]
    return targets, outputs, regions


# ------------------------------------------------------------------ records


def test_records_say_what_the_components_read_and_provide():
    manager = get_plugin_manager()
    for name in ("local_psnr", "local_ssim"):
        record = manager.get("metric", name).record
        assert record.requires == ("blur_mask",) and record.higher_is_better and not record.problems()
    source = manager.get("mask_source", "flow_mask").record
    assert source.provides == ("blur_mask",) and not source.problems()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", ["local_psnr", "local_ssim"])
def test_every_protocol_passes_the_conformance_checks(name, protocol):
    check_component("metric", name, {"protocol": protocol, "threshold": 0.5, "crop_border": 2})


def test_the_flow_mask_passes_the_conformance_checks():
    check_component("mask_source", "flow_mask", {"preset": "fast", "symmetric": False})


# ------------------------------------------------------------------ the definitions


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", ["local_psnr", "local_ssim"])
def test_each_protocol_is_its_definition(pair, name, protocol):
    targets, outputs, regions = pair
    values = build("metric", name, protocol=protocol)(tensor(*outputs), tensor(*targets), blur_mask=masks(*regions))
    assert set(values) == {"in", "out"}
    reference = REFERENCES[(name, protocol)]
    for index in range(2):
        x, y, region = outputs[index], targets[index], regions[index]
        assert values["in"][index].item() == pytest.approx(reference(x, y, region), abs=1e-10)
        assert values["out"][index].item() == pytest.approx(reference(x, y, ~region), abs=1e-10)
    metric = build("metric", name, protocol=protocol)
    assert protocol in metric.protocol and "\n" not in metric.protocol


def test_the_official_psnr_is_inflated_by_the_area_ratio(pair):
    targets, outputs, regions = pair
    args = (tensor(*outputs), tensor(*targets))
    official = build("metric", "local_psnr", protocol="official")(*args, blur_mask=masks(*regions))
    area = build("metric", "local_psnr", protocol="mask_area")(*args, blur_mask=masks(*regions))
    for key, part in (("in", regions), ("out", [~r for r in regions])):
        fraction = torch.tensor([r.mean() for r in part], dtype=torch.float64)
        assert (official[key] > area[key]).all()  # a partial region: official >= mask_area, strictly here
        assert torch.allclose(official[key] - area[key], -10 * torch.log10(fraction), atol=1e-9)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", ["local_psnr", "local_ssim"])
def test_the_complement_mask_swaps_in_and_out(pair, name, protocol):
    targets, outputs, regions = pair
    metric = build("metric", name, protocol=protocol)
    args = (tensor(*outputs), tensor(*targets))
    straight = metric(*args, blur_mask=masks(*regions))
    swapped = metric(*args, blur_mask=masks(*[~r for r in regions]))
    assert torch.equal(straight["in"], swapped["out"]) and torch.equal(straight["out"], swapped["in"])
    flat = metric(*args, blur_mask=masks(*regions)[:, 0])  # B x H x W reads the same as B x 1 x H x W
    assert all(torch.equal(flat[k], straight[k]) for k in straight)
    soft = masks(*regions) * 0.6 + 0.2  # a soft map: 0.8 in the region, 0.2 outside
    thresholded = build("metric", name, protocol=protocol, threshold=0.5)(*args, blur_mask=soft)
    assert all(torch.equal(thresholded[k], straight[k]) for k in straight)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_identical_image_scores_the_maximum(pair, protocol):
    targets, _, regions = pair
    images, blur_mask = tensor(*targets), masks(*regions)
    psnr = build("metric", "local_psnr", protocol=protocol)(images, images, blur_mask=blur_mask)
    ssim = build("metric", "local_ssim", protocol=protocol)(images + 0.3 / 255, images, blur_mask=blur_mask)
    for key in ("in", "out"):
        assert (psnr[key] == math.inf).all()
        assert torch.allclose(ssim[key], torch.ones(2, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_empty_region_is_nan_and_the_other_is_the_whole_image_score(pair, protocol):
    targets, outputs, _ = pair
    args = (tensor(*outputs), tensor(*targets))
    nothing = torch.zeros(2, 1, SIZE[1], SIZE[0])
    psnr = build("metric", "local_psnr", protocol=protocol)(*args, blur_mask=nothing)
    ssim = build("metric", "local_ssim", protocol=protocol)(*args, blur_mask=nothing)
    assert psnr["in"].isnan().all() and ssim["in"].isnan().all()
    assert torch.allclose(psnr["out"], build("metric", "psnr")(*args), atol=1e-10)
    assert torch.allclose(ssim["out"], build("metric", "ssim")(*args), atol=1e-12)
    everything = build("metric", "local_psnr", protocol=protocol)(*args, blur_mask=nothing + 1)
    assert everything["out"].isnan().all() and torch.allclose(everything["in"], psnr["out"], atol=1e-10)
    border_only = nothing.clone()
    border_only[..., :3, :] = 1  # blurred pixels only where the valid SSIM map does not reach
    inner = build("metric", "local_ssim", protocol="mask_area")(*args, blur_mask=border_only)
    assert inner["in"].isnan().all() and inner["out"].isfinite().all()


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("name", ["local_psnr", "local_ssim"])
def test_crop_border_trims_images_and_mask_alike(pair, name, protocol):
    targets, outputs, regions = pair
    cropped = build("metric", name, protocol=protocol, crop_border=4)(
        tensor(*outputs), tensor(*targets), blur_mask=masks(*regions)
    )
    reference = REFERENCES[(name, protocol)]
    trim = (slice(4, -4), slice(4, -4))
    for index in range(2):
        x, y, region = outputs[index][trim], targets[index][trim], regions[index][trim]
        assert cropped["in"][index].item() == pytest.approx(reference(x, y, region), abs=1e-10)
        assert cropped["out"][index].item() == pytest.approx(reference(x, y, ~region), abs=1e-10)


def test_a_missing_or_misshapen_mask_is_refused(pair):
    targets, outputs, regions = pair
    args = (tensor(*outputs), tensor(*targets))
    metric = build("metric", "local_psnr")
    with pytest.raises(ValueError, match="needs the blur_mask input"):
        metric(*args)
    with pytest.raises(ValueError, match="blur_mask must be B x H x W or B x 1 x H x W"):
        metric(*args, blur_mask=masks(*regions)[:, :, :-1])
    with pytest.raises(ValueError, match="blur_mask must be"):
        metric(*args, blur_mask=masks(*regions).expand(-1, 3, -1, -1))
    with pytest.raises(ValueError, match="11x11"):
        build("metric", "local_ssim", crop_border=20)(*args, blur_mask=masks(*regions))


# ------------------------------------------------------------------ the flow mask


def moving_square(shift: int, size: int = 96) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured square pasted on a photo, in the sharp image and ``shift`` px to the right in the other one;
    returns (moved, sharp, region covering the square in both)."""
    background = photo("astronaut", (size, size)).astype(np.float32) / 255
    square = photo("chelsea", (24, 24)).astype(np.float32) / 255
    sharp, moved = background.copy(), background.copy()
    sharp[36:60, 30:54] = square
    moved[36:60, 30 + shift : 54 + shift] = square
    region = np.zeros((size, size), bool)
    region[36:60, 30 : 54 + shift] = True
    return moved, sharp, region


def write_pair(folder: Path, blurry: np.ndarray, sharp: np.ndarray, name: str = "a") -> Pair:
    write_image(folder / "input" / f"{name}.png", blurry)
    write_image(folder / "target" / f"{name}.png", sharp)
    return Pair(name, folder / "input" / f"{name}.png", folder / "target" / f"{name}.png")


def test_the_flow_mask_is_empty_for_identical_images(tmp_path):
    sharp = photo("coffee", (80, 60)).astype(np.float32) / 255
    source = build("mask_source", "flow_mask")
    mask = source(sharp, write_pair(tmp_path, sharp, sharp))
    assert mask.shape == (60, 80) and mask.dtype == np.float32 and not mask.any()


def test_the_flow_mask_covers_a_moving_square_and_little_else(tmp_path):
    moved, sharp, region = moving_square(shift=3)
    pair = write_pair(tmp_path, moved, sharp)
    mask = build("mask_source", "flow_mask")(moved, pair).astype(bool)
    assert set(np.unique(mask)) == {False, True}
    assert mask[region].mean() > 0.9  # the square, where it is in either image
    assert mask[~region].mean() < 0.1  # flow spills over the square's edges a little, never far
    far = np.ones_like(region)
    far[20:76, 14:76] = False
    assert not mask[far].any()
    one_way = build("mask_source", "flow_mask", symmetric=False)(moved, pair).astype(bool)
    assert (one_way <= mask).all()  # the symmetric mask adds the backward flow's pixels
    strict = build("mask_source", "flow_mask", threshold=10.0)(moved, pair)
    assert not strict.any()  # a 3 px move is nowhere 10 px long


def test_the_flow_mask_refuses_pairs_it_cannot_compare(tmp_path):
    from deblurstack import DeblurstackError, ImageError

    moved, sharp, _ = moving_square(shift=2)
    pair = write_pair(tmp_path, moved, sharp[:-1])
    with pytest.raises(ImageError, match="95 but"):
        build("mask_source", "flow_mask")(moved, pair)
    tiny = write_pair(tmp_path / "tiny", moved[:8, :8], sharp[:8, :8])
    with pytest.raises(DeblurstackError, match="at least 12 pixels"):
        build("mask_source", "flow_mask")(moved[:8, :8], tiny)


# ------------------------------------------------------------------ `deblurstack test`, end to end

LOCAL_METRICS = [
    {"type": "psnr"},
    {"type": "local_psnr"},
    {"type": "local_psnr", "protocol": "mask_area"},
    {"type": "local_ssim", "protocol": "mask_area"},
]


def write_config(folder: Path, dataset: dict, metrics: list[dict]) -> Path:
    """A tiny unet stack with weights on disk, scoring ``dataset`` with ``metrics``."""
    config = folder / "local.yaml"
    body = {"name": "local", "stack": {"backbone": {"type": "unet.tiny"}}, "data": {"test": dataset}}
    config.write_text(yaml.safe_dump({**body, "metrics": metrics}, sort_keys=False))
    torch.manual_seed(0)
    stack = resolve_config(config).build_stack()
    torch.save({"params": stack.state_dict()}, folder / "weights.pth")
    body["stack"]["checkpoint"] = str(folder / "weights.pth")
    config.write_text(yaml.safe_dump({**body, "metrics": metrics}, sort_keys=False))
    return config


def read_rows(report: Path) -> list[dict[str, str]]:
    with open(report / "per_image.csv", newline="") as file:
        return list(csv.DictReader(file))


def test_deblurstack_test_on_a_local_blur_folder_reports_both_protocols(tmp_path, capsys):
    (tmp_path / "mask").mkdir()
    for index, name in enumerate(("astronaut", "coffee")):
        sharp = photo(name)
        region = ellipse(centre=(30 + 8 * index, 24))
        blurry = sharp.copy()
        smeared = cv2.blur(sharp, (9, 1))  # horizontal motion blur, inside the region only
        blurry[region] = smeared[region]
        cv2.imwrite(str(tmp_path / "mask" / f"{index}.png"), region.astype(np.uint8) * 255)  # 0/255, as LODE's
        write_image(tmp_path / "input" / f"{index}.png", blurry.astype(np.float32) / 255)
        write_image(tmp_path / "target" / f"{index}.png", sharp.astype(np.float32) / 255)
    dataset = {
        "type": "local_blur_folder",
        "input_dir": str(tmp_path / "input"),
        "target_dir": str(tmp_path / "target"),
        "mask_dir": str(tmp_path / "mask"),
    }
    config = write_config(tmp_path, dataset, LOCAL_METRICS)
    report = tmp_path / "report"
    assert main(["test", str(config), "--out", str(report)]) == 0
    capsys.readouterr()
    summary = (report / "summary.md").read_text()
    columns = ["local_psnr_in", "local_psnr_out", "local_psnr_1_in", "local_psnr_1_out"]
    header = "| | psnr ↑ | " + " | ".join(f"{c} ↑" for c in columns) + " | local_ssim_in ↑ | local_ssim_out ↑ |"
    assert header in summary
    lead = "PSNR on the blur region (in: blur_mask > 0) and the rest (out), protocol"
    assert f"- `local_psnr`: {lead} official = BladeNet/LODE eval.py" in summary
    assert f"- `local_psnr_1`: {lead} mask_area = ReLoBlur/LBAG weighted" in summary
    assert "- `local_ssim`: SSIM on the blur region" in summary and "ReLoBlur/LBAG weighted" in summary
    blurry_row = next(line for line in summary.splitlines() if line.startswith("| blurry input"))
    cells = blurry_row.split(" | ")
    assert cells[3] == "inf" and cells[5] == "inf"  # the blurry input's background is the sharp one, untouched
    rows = read_rows(report)
    assert [row["image"] for row in rows] == ["0", "1"]
    assert all(math.isfinite(float(row["local_psnr_in"])) for row in rows)
    # official >= mask_area on each image, as the protocols say
    assert all(float(row["local_psnr_in"]) > float(row["local_psnr_1_in"]) for row in rows)


def test_deblurstack_test_makes_the_blur_mask_with_flow_mask_for_a_paired_folder(tmp_path, capsys):
    for index, shift in enumerate((3, 4)):
        moved, sharp, _ = moving_square(shift)
        write_pair(tmp_path, moved, sharp, name=str(index))
    dataset = {"type": "paired_folder", "input_dir": str(tmp_path / "input"), "target_dir": str(tmp_path / "target")}
    config = write_config(tmp_path, {**dataset, "aux": {"blur_mask": {"type": "flow_mask"}}}, LOCAL_METRICS[:2])
    report = tmp_path / "report"
    assert main(["test", str(config), "--out", str(report)]) == 0
    capsys.readouterr()
    summary = (report / "summary.md").read_text()
    assert "| | psnr ↑ | local_psnr_in ↑ | local_psnr_out ↑ |" in summary
    assert "- `local_psnr`: PSNR on the blur region" in summary
    rows = read_rows(report)
    assert len(rows) == 2 and all(math.isfinite(float(row["input_local_psnr_in"])) for row in rows)
    # the flow mask holds the moved square, so outside it the blurry input (nearly) equals the target
    assert all(float(row["input_local_psnr_out"]) > float(row["input_local_psnr_in"]) + 10 for row in rows)

    # without a blur_mask source, the config check names the input and the sources that provide it
    bare = yaml.safe_load(config.read_text())
    bare["data"]["test"] = dataset
    config.write_text(yaml.safe_dump(bare))
    assert main(["config", "check", str(config)]) == 2
    error = capsys.readouterr().err
    assert "blur_mask" in error and "flow_mask" in error


def test_config_check_refuses_bad_local_metric_values(tmp_path, capsys):
    dataset = {"type": "local_blur_folder", "input_dir": ".", "target_dir": ".", "mask_dir": "."}
    for folder in ("input", "target", "mask"):
        (tmp_path / folder).mkdir()
        dataset[f"{folder}_dir"] = str(tmp_path / folder)
    config = tmp_path / "bad.yaml"
    for node, words in (
        ({"type": "local_psnr", "threshold": 1.0}, "metrics[0].threshold"),
        ({"type": "local_ssim", "protocol": "bladenet"}, "metrics[0].protocol"),
        ({"type": "local_psnr", "crop_border": -1}, "metrics[0].crop_border"),
    ):
        body = {"stack": {"backbone": {"type": "unet.tiny"}}, "data": {"test": dataset}, "metrics": [node]}
        config.write_text(yaml.safe_dump(body))
        assert main(["config", "check", str(config)]) == 2
        assert words in capsys.readouterr().err


def test_an_image_without_the_region_is_left_out_of_the_mean_and_an_all_nan_column_stays_nan():
    from deblurstack.engine.evaluation import Evaluation

    nan = float("nan")
    rows = [
        {"image": "a", "local_psnr_in": 30.0, "local_psnr_out": nan, "input_local_psnr_in": 20.0},
        {"image": "b", "local_psnr_in": nan, "local_psnr_out": nan, "input_local_psnr_in": 24.0},
        {"image": "c", "local_psnr_in": 34.0, "local_psnr_out": nan, "input_local_psnr_in": nan},
    ]
    means = Evaluation(rows).means()
    assert means["local_psnr_in"] == 32.0 and math.isnan(means["local_psnr_out"])
    assert Evaluation(rows).means("input_") == {"local_psnr_in": 22.0}
