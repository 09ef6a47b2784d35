"""The built-in metrics against closed forms, scikit-image and slow independent references, on real photos."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage import data
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from deblurstack import DeblurstackError
from deblurstack.registry import get_plugin_manager

PHOTOS = ("astronaut", "chelsea", "coffee")


def build(name: str, **params):
    """A metric built from its registry record, as a stack would build it."""
    return get_plugin_manager().get("metric", name).record.load_factory()(**params)


def photo(name: str, size: tuple[int, int] = (96, 72)) -> np.ndarray:
    """A real RGB uint8 photo from skimage.data, downsized to ``size`` (width, height)."""
    return cv2.resize(getattr(data, name)(), size, interpolation=cv2.INTER_AREA)


def degrade(image: np.ndarray, seed: int = 0, noise: float = 6.0) -> np.ndarray:
    """Gaussian blur plus Gaussian noise, back to uint8."""
    blurred = cv2.GaussianBlur(image.astype(np.float64), (5, 5), 1.2)
    noisy = blurred + np.random.default_rng(seed).normal(0.0, noise, image.shape)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def tensor(*images: np.ndarray) -> torch.Tensor:
    """``H x W x 3`` uint8 (or float in [0, 1]) arrays -> ``B x 3 x H x W`` float32 in [0, 1]."""
    batch = np.stack([i.astype(np.float32) / 255 if i.dtype == np.uint8 else i.astype(np.float32) for i in images])
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def y_channel(image: np.ndarray) -> np.ndarray:
    """BasicSR's BT.601 Y on the 8-bit scale, written out independently (float64)."""
    r, g, b = (image[..., i].astype(np.float64) for i in range(3))
    return 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255


@pytest.fixture(scope="module")
def lpips_random():
    return build("lpips", pretrained_backbone=False)


# --------------------------------------------------------------------------------------------- registry, shapes


def test_records_describe_the_metrics():
    manager = get_plugin_manager()
    records = {name: manager.get("metric", name).record for name in ("psnr", "ssim", "lpips", "mcr", "realblur")}
    assert records["mcr"].requires == ("input",)
    assert not records["mcr"].higher_is_better and not records["lpips"].higher_is_better
    assert (
        records["psnr"].higher_is_better and records["ssim"].higher_is_better and records["realblur"].higher_is_better
    )
    assert all(not record.problems() for record in records.values())


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("psnr", {}),
        ("psnr", {"crop_border": 3, "test_y_channel": True}),
        ("ssim", {}),
        ("ssim", {"variant": "gaussian3d"}),
        ("ssim", {"variant": "gaussian3d", "test_y_channel": True, "crop_border": 2}),
        ("mcr", {}),
        ("lpips", {"pretrained_backbone": False}),
    ],
)
def test_one_value_per_image_at_odd_sizes(name, params, lpips_random):
    metric = lpips_random if name == "lpips" else build(name, **params)
    size = (33, 37) if name == "lpips" else (29, 37)  # AlexNet's pooling needs 31 pixels a side
    target = tensor(photo("rocket", size), photo("chelsea", size))
    output = tensor(degrade(photo("rocket", size)), degrade(photo("chelsea", size), seed=1))
    values = metric(output, target, input=target.flip(-1))
    assert values.shape == (2,)
    assert torch.isfinite(values).all()
    assert isinstance(metric.protocol, str) and metric.protocol and "\n" not in metric.protocol


# --------------------------------------------------------------------------------------------- PSNR


def test_psnr_of_a_one_level_offset_is_the_closed_form():
    target = np.minimum(photo("astronaut"), 254)
    output = tensor(target).double() + 1 / 255  # every value one 8-bit level up, after rounding
    assert build("psnr")(output, tensor(target)).item() == pytest.approx(20 * math.log10(255), abs=1e-9)  # 48.13 dB
    # on Y, one level on R, G and B moves Y by (65.481 + 128.553 + 24.966) / 255 = 219 / 255
    y_psnr = build("psnr", test_y_channel=True)(output, tensor(target)).item()
    assert y_psnr == pytest.approx(20 * math.log10(255 * 255 / 219), abs=1e-9)


@pytest.mark.parametrize("name", PHOTOS)
def test_psnr_matches_skimage_on_uint8_images(name):
    target = photo(name)
    output = degrade(target)
    expected = peak_signal_noise_ratio(target, output, data_range=255)
    assert build("psnr")(tensor(output), tensor(target)).item() == pytest.approx(expected, abs=1e-9)


def test_psnr_rounds_to_uint8_and_clamps():
    target = photo("coffee")
    output = tensor(target) + 0.3 / 255  # rounds back to the same levels
    assert build("psnr")(output, tensor(target)).item() == math.inf
    saturated = tensor(np.full_like(target, 255))
    assert build("psnr")(saturated + 0.5, saturated).item() == math.inf  # clamped to 1 first


def test_psnr_is_per_image_and_infinite_only_for_identical_images():
    targets = tensor(photo("astronaut"), photo("chelsea"))
    outputs = targets.clone()
    outputs[1] = tensor(degrade(photo("chelsea")))[0]
    values = build("psnr")(outputs, targets)
    expected = peak_signal_noise_ratio(photo("chelsea"), degrade(photo("chelsea")), data_range=255)
    assert values[0].item() == math.inf
    assert values[1].item() == pytest.approx(expected, abs=1e-9)


def test_psnr_crop_border_ignores_the_edges():
    target = photo("rocket")
    output = target.copy()
    output[:4] = 0  # damage only a 4-pixel frame
    output[-4:] = 0
    output[:, :4] = 255
    output[:, -4:] = 255
    assert math.isfinite(build("psnr")(tensor(output), tensor(target)).item())
    assert build("psnr", crop_border=4)(tensor(output), tensor(target)).item() == math.inf
    noisy = degrade(target)
    expected = peak_signal_noise_ratio(target[6:-6, 6:-6], noisy[6:-6, 6:-6], data_range=255)
    assert build("psnr", crop_border=6)(tensor(noisy), tensor(target)).item() == pytest.approx(expected, abs=1e-9)


def test_psnr_on_y_matches_an_independent_luma():
    target = photo("chelsea")
    output = degrade(target)
    expected = peak_signal_noise_ratio(y_channel(target), y_channel(output), data_range=255)
    value = build("psnr", test_y_channel=True)(tensor(output), tensor(target)).item()
    assert value == pytest.approx(expected, abs=1e-9)
    assert value != pytest.approx(build("psnr")(tensor(output), tensor(target)).item(), abs=0.01)


# --------------------------------------------------------------------------------------------- SSIM


def skimage_ssim(a: np.ndarray, b: np.ndarray) -> float:
    channel_axis = -1 if a.ndim == 3 else None
    options = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255}
    return structural_similarity(a.astype(np.float64), b.astype(np.float64), channel_axis=channel_axis, **options)


@pytest.mark.parametrize("name", PHOTOS)
def test_gaussian_ssim_matches_skimage(name):
    # skimage filters the whole image with reflect padding but averages only the map 5 pixels away from
    # the border, where the 11x11 window never leaves the image: the valid region, as BasicSR/MATLAB.
    # So the two agree to rounding error, not just approximately.
    target = photo(name)
    for seed, noise in ((0, 6.0), (1, 25.0)):
        output = degrade(target, seed, noise)
        value = build("ssim")(tensor(output), tensor(target)).item()
        assert value == pytest.approx(skimage_ssim(output, target), abs=1e-10)


def test_gaussian_ssim_crop_border_and_y_channel_match_skimage():
    target = photo("coffee")
    output = degrade(target, noise=12.0)
    cropped = build("ssim", crop_border=7)(tensor(output), tensor(target)).item()
    assert cropped == pytest.approx(skimage_ssim(output[7:-7, 7:-7], target[7:-7, 7:-7]), abs=1e-10)
    luma = build("ssim", test_y_channel=True)(tensor(output), tensor(target)).item()
    assert luma == pytest.approx(skimage_ssim(y_channel(output), y_channel(target)), abs=1e-10)


def test_gaussian_ssim_needs_an_11_pixel_window():
    image = tensor(photo("rocket", (10, 20)))
    with pytest.raises(ValueError, match="11x11"):
        build("ssim")(image, image)


def ssim3d_reference(a: np.ndarray, b: np.ndarray) -> float:
    """NAFNet's 3-D SSIM the slow way: one 11x11x11 kernel over H x W x C, nearest (= replicate) padding."""
    g = cv2.getGaussianKernel(11, 1.5)[:, 0]
    kernel = g[:, None, None] * g[None, :, None] * g[None, None, :]
    x, y = a.astype(np.float64), b.astype(np.float64)
    if x.ndim == 2:
        x, y = x[..., None], y[..., None]

    def blur(v):
        return ndimage.convolve(v, kernel, mode="nearest")

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    return float((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


@pytest.mark.parametrize("name", PHOTOS)
def test_gaussian3d_ssim_matches_a_slow_3d_convolution(name):
    target = photo(name, (45, 38))
    output = degrade(target, noise=15.0)
    value = build("ssim", variant="gaussian3d")(tensor(output), tensor(target)).item()
    assert value == pytest.approx(ssim3d_reference(output, target), abs=1e-10)
    luma = build("ssim", variant="gaussian3d", test_y_channel=True)(tensor(output), tensor(target)).item()
    assert luma == pytest.approx(ssim3d_reference(y_channel(output), y_channel(target)), abs=1e-10)
    # a different protocol from the per-channel SSIM: the numbers are not interchangeable
    assert value != pytest.approx(build("ssim")(tensor(output), tensor(target)).item(), abs=1e-3)


@pytest.mark.parametrize("variant", ["gaussian", "gaussian3d"])
def test_ssim_of_identical_images_is_one_and_falls_with_noise(variant):
    target = photo("astronaut")
    metric = build("ssim", variant=variant)
    assert metric(tensor(target), tensor(target)).item() == pytest.approx(1.0, abs=1e-12)
    mild, strong = (metric(tensor(degrade(target, noise=n)), tensor(target)).item() for n in (3.0, 30.0))
    assert 1.0 > mild > strong


# --------------------------------------------------------------------------------------------- LPIPS


def test_lpips_is_zero_for_identical_images_and_grows_with_noise(lpips_random):
    target = tensor(photo("chelsea", (64, 64)), photo("coffee", (64, 64)))
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(target.shape, generator=generator)
    same = lpips_random(target, target)
    mild, strong = (lpips_random(target + s * noise, target) for s in (0.02, 0.2))
    assert same.shape == (2,) and same.abs().max().item() < 1e-6
    assert (mild > 1e-4).all() and (strong > mild).all()
    assert "RANDOM" in lpips_random.protocol


def test_lpips_rejects_images_smaller_than_its_backbone_accepts(lpips_random):
    image = tensor(photo("rocket", (29, 37)))
    with pytest.raises(ValueError, match="at least 31 pixels"):
        lpips_random(image, image)


def test_lpips_stays_in_eval_mode(lpips_random):
    lpips_random.train()
    assert not lpips_random.model.training
    image = tensor(photo("rocket", (48, 40)))
    noisy = image + 0.1
    assert torch.equal(lpips_random(noisy, image), lpips_random(noisy, image))  # no dropout


def test_lpips_without_backbone_weights_says_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(DeblurstackError) as error:
        build("lpips")
    message = str(error.value)
    assert str(tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth") in message
    assert "\n" not in message
    with pytest.raises(DeblurstackError, match="vgg16-397923af.pth"):
        build("lpips", net="vgg")
    with pytest.raises(DeblurstackError, match="missing.pth"):
        build("lpips", backbone_weights=str(tmp_path / "missing.pth"))


def test_lpips_loads_a_torchvision_state_dict_from_the_hub_cache(tmp_path, monkeypatch):
    from torchvision.models import alexnet

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    features = alexnet(weights=None).features.state_dict()  # stands in for the ImageNet weights
    path = tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth"
    path.parent.mkdir()
    torch.save({f"features.{key}": value for key, value in features.items()}, path)
    metric = build("lpips")
    trunk = metric.model.net.state_dict()
    assert torch.equal(trunk["slice1.0.weight"], features["0.weight"])
    assert torch.equal(trunk["slice5.10.bias"], features["10.bias"])
    assert str(path) in metric.protocol and "RANDOM" not in metric.protocol
    torch.save({"classifier.1.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(DeblurstackError, match="features.0.weight"):
        build("lpips", backbone_weights=str(tmp_path / "wrong.pth"))


# --------------------------------------------------------------------------------------------- MCR


def test_mcr_flags_a_collapsed_output_and_not_a_good_one():
    target = photo("astronaut")
    blurry = cv2.GaussianBlur(target, (7, 7), 2.0)
    collapsed = degrade(target, noise=60.0)  # far below the blurry input's PSNR
    good = degrade(target, noise=2.0)
    targets = tensor(target, target)
    flags = build("mcr")(tensor(collapsed, good), targets, input=tensor(blurry, blurry))
    assert flags.tolist() == [1.0, 0.0]


def test_mcr_uses_the_psnr_drop_against_its_threshold():
    target = photo("coffee")
    blurry = tensor(cv2.GaussianBlur(target, (5, 5), 1.5))
    output = tensor(degrade(target, noise=20.0))
    psnr = build("psnr")
    drop = (psnr(blurry, tensor(target)) - psnr(output, tensor(target))).item()
    assert build("mcr", threshold=drop - 0.05)(output, tensor(target), input=blurry).item() == 1.0
    assert build("mcr", threshold=drop + 0.05)(output, tensor(target), input=blurry).item() == 0.0


# --------------------------------------------------------------------------------------------- RealBlur


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    matrix = np.float32([[1, 0, dx], [0, 1, dy]])
    size = (image.shape[1], image.shape[0])
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize(("name", "dx", "dy"), [("astronaut", 1, 0), ("astronaut", 0, -1), ("chelsea", 2, -1)])
def test_realblur_alignment_undoes_a_shift_and_an_intensity_scale(name, dx, dy):
    target = photo(name, (128, 128)).astype(np.float32) / 255
    prediction = 0.9 * shifted(target, dx, dy)
    scores = build("realblur")(tensor(prediction), tensor(target))
    plain = build("psnr")(tensor(prediction), tensor(target)).item()
    assert plain < 30
    assert scores["psnr"].item() > 35
    assert scores["ssim"].item() > 0.98


def test_realblur_returns_a_value_per_image_and_is_perfect_on_identical_images():
    # (ECC runs all 100 iterations, eps 0: on tiny flat images such as rocket at 64x48 it can drift
    # even for identical inputs; these two are textured enough)
    target = tensor(photo("astronaut", (64, 48)), photo("coffee", (64, 48)))
    scores = build("realblur")(target, target)
    assert set(scores) == {"psnr", "ssim"}
    assert scores["psnr"].shape == scores["ssim"].shape == (2,)
    assert (scores["psnr"] > 60).all()
    assert torch.allclose(scores["ssim"], torch.ones(2, dtype=torch.float64), atol=1e-6)


def test_realblur_warns_and_scores_unaligned_when_ecc_fails():
    target = tensor(photo("astronaut", (64, 64)))
    flat = torch.full_like(target, 0.5)  # no texture: ECC cannot converge
    with pytest.warns(UserWarning, match="ECC alignment failed"):
        scores = build("realblur")(flat, target)
    assert torch.isfinite(scores["psnr"]).all() and scores["psnr"].item() < 20
