"""LODE's local blur synthesis (``lbs``): moving objects over a background, their frames averaged."""

from __future__ import annotations

import inspect
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from deblurstack import ConfigError, ImageError
from deblurstack.cli import main
from deblurstack.compose import resolve_node
from deblurstack.data import read_map
from deblurstack.plugins.synthesis.lbs import LocalBlurSynthesis
from deblurstack.plugins.synthesis.objects import PhotoSegments, read_instance_map, segment_photo, tight_crop
from deblurstack.registry import get_plugin_manager
from deblurstack.testing import check_component

#: a still object: no scale, no rotation
STILL = {"scale": (0.0, 0.0), "rotation": (0.0, 0.0)}


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def texture(height: int = 48, width: int = 64, seed: int = 0) -> np.ndarray:
    return rng(seed).uniform(0.1, 0.9, size=(height, width, 3)).astype(np.float32)


def voc_palette() -> list[int]:
    """PASCAL VOC's colour map (index 255, the void label, is (224, 224, 192))."""
    palette = []
    for index in range(256):
        red = green = blue = 0
        code = index
        for bit in range(8):
            red |= (code & 1) << (7 - bit)
            green |= ((code >> 1) & 1) << (7 - bit)
            blue |= ((code >> 2) & 1) << (7 - bit)
            code >>= 3
        palette += [red, green, blue]
    return palette


def write_voc(root: Path, count: int = 2, labels: bool = True) -> Path:
    """A tiny VOC 2012 folder: 40 x 50 photos with two or three instances each, inside a void ring."""
    (root / "JPEGImages").mkdir(parents=True)
    if labels:
        (root / "SegmentationObject").mkdir()
    for n in range(count):
        photo = (texture(40, 50, seed=n) * 255).astype(np.uint8)
        cv2.imwrite(str(root / "JPEGImages" / f"2007_{n:06d}.jpg"), photo)
        ids = np.zeros((40, 50), np.uint8)
        ids[3:17, 3:21] = 255  # void ring around instance 1
        ids[4:16, 4:20] = 1
        ids[20:36, 25:45] = 2
        ids[22:30, 5:15] = 17  # gray level 75, as index 2's colour: merged with it when read as grayscale
        if labels:
            png = Image.fromarray(ids, "P")
            png.putpalette(voc_palette())
            png.save(root / "SegmentationObject" / f"2007_{n:06d}.png")
    return root


def write_rgba(folder: Path, count: int = 3, size: int = 12) -> Path:
    """Cut-outs: opaque discs of different colours in transparent squares."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2 + 0.5) ** 2 + (xx - size / 2 + 0.5) ** 2 <= (size / 2) ** 2
    for n in range(count):
        rgba = np.zeros((size, size, 4), np.uint8)
        rgba[..., :3] = rng(n).integers(0, 256, (size, size, 3))
        rgba[..., 3] = np.where(disc, 255, 0)
        Image.fromarray(rgba, "RGBA").save(folder / f"object_{n}.png")
    return folder


@pytest.fixture
def rgba_dir(tmp_path: Path) -> str:
    return str(write_rgba(tmp_path / "objects"))


def lbs(**params) -> LocalBlurSynthesis:
    return LocalBlurSynthesis(**params)


# ---------------------------------------------------------------- registry and signature


def test_lbs_is_registered_with_its_mask_and_presets():
    record = get_plugin_manager().get("synthesizer", "lbs").record
    assert record.load_factory() is LocalBlurSynthesis
    assert record.frames == 1 and record.provides == ("blur_mask",)
    assert set(record.presets) == {"official", "paper"}
    official, paper = record.presets["official"], record.presets["paper"]
    assert official["frames"] == [5, 21] and official["dx"] == official["dy"] == [0.0, 1.0]
    assert official["scale"] == [0.01, 0.01] and official["rotation"] == [0.3, 0.3] and official["quirks"] is True
    assert paper["frames"] == [7, 13] and paper["object_scale"] == 1.2 and paper["quirks"] is False
    assert "2109.09149" in record.reference


def test_every_parameter_is_typed_defaulted_and_documented():
    doc = inspect.getdoc(LocalBlurSynthesis)
    for name, parameter in inspect.signature(LocalBlurSynthesis).parameters.items():
        assert parameter.annotation is not inspect.Parameter.empty, name
        assert parameter.default is not inspect.Parameter.empty, name
        assert f"\n    {name}: " in doc.split("Args:")[1], f"{name} is not documented in Args:"


def refusal(node: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_node("synthesizer", node, "--type / --set")
    return " ".join(caught.value.problems)


def test_settings_that_cannot_work_are_refused(tmp_path):
    assert "must be odd, got 6" in refusal({"type": "lbs", "frames": [5, 6]})
    assert "frames" in refusal({"type": "lbs", "frames": [-1, 5]})
    assert "objects" in refusal({"type": "lbs", "objects": "coco"})
    assert "object_dir" in refusal({"type": "lbs", "objects": "rgba", "object_dir": str(tmp_path / "missing")})
    with pytest.raises(ValueError, match="frames must be a range"):
        lbs(frames=(9, 5))
    with pytest.raises(ValueError, match="needs object_dir"):
        lbs(objects="voc")
    with pytest.raises(ValueError, match="no whole number"):
        lbs(integer_steps=True, dx=(0.2, 0.8))


# ---------------------------------------------------------------- pairs


def test_same_seed_same_pair_different_seeds_differ(rgba_dir):
    synth = lbs(objects="rgba", object_dir=rgba_dir)
    background = texture()
    first, again = synth([background], rng(3)), synth([background], rng(3))
    assert set(first) == {"input", "target", "blur_mask"}
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    other = lbs(objects="rgba", object_dir=rgba_dir)([background], rng(4))
    assert not np.array_equal(first["input"], other["input"])
    assert first["input"].dtype == first["target"].dtype == first["blur_mask"].dtype == np.float32
    assert first["blur_mask"].shape == background.shape[:2] and set(np.unique(first["blur_mask"])) <= {0.0, 1.0}


@pytest.mark.parametrize("seed", range(6))
def test_the_blur_is_inside_the_mask_and_static_objects_are_in_both_images(rgba_dir, seed):
    synth = lbs(objects="rgba", object_dir=rgba_dir, min_object_pixels=1)
    background = texture(seed=seed)
    count, statics, movers = synth.sample(rng(seed), *background.shape[:2])
    assert statics and movers
    pair = synth.render(background, count, statics, movers)
    still = synth.render(background, count, statics, [])["target"]  # the background with the static objects
    outside = pair["blur_mask"] == 0
    assert pair["blur_mask"].any()
    np.testing.assert_array_equal(pair["input"][outside], pair["target"][outside])
    np.testing.assert_array_equal(pair["target"][outside], still[outside])
    assert not np.array_equal(still, background)  # the static objects are there ...
    pasted = np.any(still != background, axis=2)
    assert np.all(pair["target"][pasted & outside] == still[pasted & outside])  # ... unblurred in both images
    changed = np.any(pair["input"] != pair["target"], axis=2)
    assert changed.any() and not changed[outside].any()
    # without the static objects, the target is the background wherever the mask is 0
    plain = synth.render(background, count, [], movers)
    np.testing.assert_array_equal(plain["target"][outside], background[outside])


def square_folder(tmp_path: Path, colour=(230, 40, 20), size: int = 8) -> str:
    folder = tmp_path / "square"
    folder.mkdir()
    rgba = np.zeros((size, size, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = colour, 255
    Image.fromarray(rgba, "RGBA").save(folder / "square.png")
    return str(folder)


@pytest.mark.parametrize("quirks", [False, True])
def test_a_square_moving_right_leaves_the_average_of_its_frames(tmp_path, quirks):
    folder = square_folder(tmp_path)
    synth = lbs(
        objects="rgba", object_dir=folder, frames=(5, 5), dx=(3.0, 3.0), dy=(0.0, 0.0), static_images=0,
        max_instances=1, min_object_pixels=1, quirks=quirks, **STILL,
    )  # fmt: skip
    grey = 100 / 255
    background = np.full((40, 60, 3), grey, np.float32)
    for seed in range(100):  # the first scene whose path stays inside the image
        count, statics, movers = synth.sample(rng(seed), 40, 60)
        (mover,) = movers
        start = mover.poses[0][:, 2]  # the top-left corner in the first frame
        if 0 <= start[0] and start[0] + 8 + 12 <= 60 and 0 <= start[1] and start[1] + 8 <= 40:
            break
    else:
        pytest.fail("no seed keeps the path inside the image")
    pair = synth.render(background, count, statics, movers)
    rows, cols = np.nonzero(pair["blur_mask"])
    assert cols.max() - cols.min() + 1 == 8 + 4 * 3 and rows.max() - rows.min() + 1 == 8
    left, top = cols.min(), rows.min()
    # the target is the middle frame: the square 2 steps (6 px) from where the path starts, exactly as cut
    target_square = pair["target"][top : top + 8, left + 6 : left + 14]
    np.testing.assert_allclose(target_square, np.broadcast_to(np.array([230, 40, 20]) / 255, (8, 8, 3)), atol=2e-6)
    # column c of the streak is covered in the frames i with 3 i <= c < 3 i + 8
    colour = np.array([230, 40, 20], np.float32)
    for offset in range(20):
        covered = [3 * i <= offset < 3 * i + 8 for i in range(5)]
        value = pair["input"][top + 3, left + offset]
        if quirks:  # on 0..255 values in float32, frame by frame, then truncated
            total = np.zeros(3, np.float32)
            for inside in covered:
                total += np.power(colour if inside else np.full(3, 100, np.float32), 2.2)
            expected = np.power(total / 5, 1 / 2.2).astype(np.uint8) / 255
        else:
            frames = sum(covered)
            expected = ((frames * (colour / 255) ** 2.2 + (5 - frames) * grey**2.2) / 5) ** (1 / 2.2)
        np.testing.assert_allclose(value, expected, atol=1e-5, err_msg=f"{offset} px in")


def test_scale_and_rotation_change_the_footprint(tmp_path):
    folder = square_folder(tmp_path, size=16)
    common = {"objects": "rgba", "object_dir": folder, "frames": (9, 9), "static_images": 0, "min_object_pixels": 1}
    still = lbs(dx=(0.0, 0.0), dy=(0.0, 0.0), **STILL, **common)
    spinning = lbs(dx=(0.0, 0.0), dy=(0.0, 0.0), scale=(0.0, 0.0), rotation=(5.0, 5.0), **common)
    background = np.full((64, 64, 3), 0.5, np.float32)
    assert still([background], rng(1))["blur_mask"].sum() <= 16 * 16
    areas = [spinning([background], rng(seed))["blur_mask"].sum() for seed in range(6)]
    assert max(areas) > 16 * 16 + 20  # a turning square sweeps more than itself (mode 0 keeps it still)


def test_frame_counts_are_odd_numbers_of_the_range(rgba_dir):
    synth = lbs(objects="rgba", object_dir=rgba_dir, frames=(5, 11))
    counts = {synth.sample(rng(seed), 30, 30)[0] for seed in range(60)}
    assert counts == {5, 7, 9, 11}


def test_paper_preset_rescales_the_objects(tmp_path):
    folder = square_folder(tmp_path, size=10)
    record = get_plugin_manager().get("synthesizer", "lbs").record
    params = {**record.presets["paper"], "objects": "rgba", "object_dir": folder, "static_images": 0}
    _, _, movers = LocalBlurSynthesis(**params).sample(rng(0), 50, 50)
    assert movers[0].pixels.shape[:2] == (12, 12)


# ---------------------------------------------------------------- the official code's quirks


def test_official_quirks_give_truncated_8_bit_values_like_the_official_average(rgba_dir):
    record = get_plugin_manager().get("synthesizer", "lbs").record
    synth = LocalBlurSynthesis(**{**record.presets["official"], "objects": "rgba", "object_dir": rgba_dir})
    pair = synth([texture()], rng(0))
    for key in ("input", "target"):
        np.testing.assert_array_equal(pair[key] * 255, np.rint(pair[key] * 255))
    # float32 roundoff, then truncation: gray level 2 averaged over 7 identical frames, as the official code
    # computes it (x ** 2.2 of the uint8 values in float32, summed frame by frame, / 7, ** (1 / 2.2), truncated),
    # comes out as 1 where float32's power lands just below 2 and as 2 where it does not: numpy's SIMD power
    # differs between CPUs (1 on the machine this test was written on, 2 on an AMD EPYC), the official code's too
    linear = np.zeros((), np.float32)
    for _ in range(7):
        linear += np.power(np.arange(256, dtype=np.float32), 2.2)[2]
    official = int(np.power(linear / 7, 1.0 / 2.2).astype(np.uint8))
    assert official in (1, 2)
    flat = np.full((30, 30, 3), 2 / 255, np.float32)
    synth = LocalBlurSynthesis(**{**record.presets["official"], "objects": "rgba", "object_dir": rgba_dir})
    synth.frames = (7,)
    count, statics, movers = synth.sample(rng(0), 30, 30)
    pair = synth.render(flat, count, [], movers)
    # (the quirky mask holds only fully covered pixels: stay a few pixels away from it)
    outside = cv2.dilate(pair["blur_mask"], np.ones((7, 7), np.uint8)) == 0
    assert outside.sum() > 100
    assert np.all(np.rint(pair["target"][outside] * 255) == 2)
    assert np.all(np.rint(pair["input"][outside] * 255) == official)


def test_official_quirks_drop_the_rotation_of_scaling_objects(rgba_dir):
    def motions(quirks):
        synth = lbs(objects="rgba", object_dir=rgba_dir, scale=(0.01, 0.01), rotation=(0.3, 0.3), quirks=quirks)
        found = set()
        for seed in range(30):
            for mover in synth.sample(rng(seed), 40, 40)[2]:
                linear = mover.poses[-1][:, :2]
                found.add((bool(abs(np.linalg.det(linear) - 1) > 1e-9), bool(abs(linear[0, 1]) > 1e-9)))
        return found

    assert (True, True) in motions(False)  # scaling and turning at once
    assert (True, True) not in motions(True) and {(True, False), (False, True)} <= motions(True)


def test_quirky_tight_crop_also_deletes_black_rows_inside_the_object():
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[2:8, 3:9] = (50, 60, 70, 255)
    rgba[4, 3:9, :3] = 0  # a black row across the object
    assert tight_crop(rgba).shape == (6, 6, 4)
    assert tight_crop(rgba, quirks=True).shape == (5, 6, 4)


# ---------------------------------------------------------------- object sources


def test_voc_instances_by_palette_index_or_as_the_official_grayscale(tmp_path):
    root = write_voc(tmp_path / "VOC2012", count=1)
    png = root / "SegmentationObject" / "2007_000000.png"
    ids, instances = read_instance_map(png)
    assert instances == [1, 2, 17]  # 0 (background) and 255 (void) excluded
    gray, gray_instances = read_instance_map(png, quirks=True)
    assert gray_instances == [38, 75] and gray[5, 5] == 38 and gray[4, 4] == 38  # indices 2 and 17 merged
    assert gray[3, 3] == 220  # the void colour, excluded
    for quirks, count in ((False, 3), (True, 2)):
        synth = lbs(objects="voc", object_dir=str(root), quirks=quirks, min_object_pixels=1)
        assert len(synth.source.load(0).objects) == count
        pair = synth([texture()], rng(0))
        assert pair["blur_mask"].any()
    assert {o.shape[:2] for o in lbs(objects="voc", object_dir=str(root)).source.load(0).objects} == {
        (12, 16),
        (16, 20),
        (8, 10),
    }


def test_a_voc_folder_without_instance_maps_is_refused_in_one_line(tmp_path):
    root = write_voc(tmp_path / "VOC2012", labels=False)
    with pytest.raises(ImageError, match="no SegmentationObject folder") as caught:
        lbs(objects="voc", object_dir=str(root))
    assert str(root) in str(caught.value) and "\n" not in str(caught.value)
    problems = refusal_at_build({"type": "lbs", "objects": "voc", "object_dir": str(root)})
    assert "SegmentationObject" in problems and str(root) in problems


def refusal_at_build(node: dict) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve_node("synthesizer", node, "--type / --set").build()
    return " ".join(caught.value.problems)


def test_an_instance_map_of_another_size_than_its_photo_is_refused_naming_both(tmp_path):
    root = write_voc(tmp_path / "VOC2012", count=1)
    jpg = root / "JPEGImages" / "2007_000000.jpg"
    cv2.imwrite(str(jpg), np.zeros((41, 50, 3), np.uint8))
    with pytest.raises(ImageError, match="is 50x40 but its image") as caught:
        lbs(objects="voc", object_dir=str(root))([texture()], rng(0))
    assert "2007_000000.png" in str(caught.value) and "2007_000000.jpg" in str(caught.value)


def test_rgba_cut_outs_and_files_without_alpha(tmp_path, rgba_dir):
    synth = lbs(objects="rgba", object_dir=rgba_dir)
    (cutout,) = synth.source.load(0).objects
    assert cutout.shape == (12, 12, 4) and not cutout.flags.writeable
    assert np.all(cutout[cutout[..., 3] == 0, :3] == 0)
    folder = tmp_path / "opaque"
    folder.mkdir()
    cv2.imwrite(str(folder / "photo.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(ImageError, match="photo.png: no alpha channel"):
        lbs(objects="rgba", object_dir=str(folder))([texture()], rng(0))


def test_segments_of_a_photo_have_the_asked_size_and_solidity():
    from skimage import data

    photo = cv2.resize(data.coffee(), (240, 160), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    found = segment_photo(photo, area=(0.02, 0.3), min_solidity=0.8, side=128, min_pixels=1)
    assert found.objects and len(found.fractions) > len(found.objects)
    total = photo.shape[0] * photo.shape[1]
    for cutout in found.objects:
        assert 0.01 < np.count_nonzero(cutout[..., 3]) / total < 0.35  # scaled back from 128 px: about the range
    slic = segment_photo(photo, "slic", side=128, min_pixels=1)
    assert slic.objects


def test_the_weight_free_default_cuts_objects_from_the_bundled_photos():
    synth = lbs()
    assert isinstance(synth.source, PhotoSegments) and len(synth.source) == 11
    pair = synth([texture(64, 80)], rng(0))
    assert pair["blur_mask"].any() and not np.array_equal(pair["input"], pair["target"])


def test_a_folder_of_photos_can_be_segmented(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    from skimage import data

    cv2.imwrite(str(folder / "chelsea.png"), cv2.resize(data.chelsea(), (150, 100))[..., ::-1])
    synth = lbs(object_dir=str(folder), segment_side=100)
    assert len(synth.source) == 1 and synth.source.load(0).objects


def test_no_usable_object_says_what_was_found(tmp_path, rgba_dir):
    with pytest.raises(ImageError, match=r"no usable object in RGBA folder .*3 candidate object\(s\) of 112 px"):
        lbs(objects="rgba", object_dir=rgba_dir, min_object_pixels=10_000)([texture()], rng(0))
    folder = tmp_path / "photos"
    folder.mkdir()
    cv2.imwrite(
        str(folder / "stripes.png"),
        np.tile(np.array([0, 255], np.uint8).repeat(8)[:, None], (4, 64))[..., None].repeat(3, 2),
    )
    with pytest.raises(ImageError, match=r"1 photo\(s\) segmented .* into \d+ segments of .*segment_area"):
        lbs(object_dir=str(folder), segment_area=(0.5, 0.6), segment_side=64)([texture()], rng(0))


# ---------------------------------------------------------------- synth command, dataset, conformance


def test_synth_writes_pairs_with_masks_that_the_local_blur_dataset_reads(tmp_path, rgba_dir):
    source = tmp_path / "sharp"
    source.mkdir()
    for n in range(2):
        cv2.imwrite(str(source / f"{n}.png"), (texture(36, 44, seed=n) * 255).astype(np.uint8))
    out = tmp_path / "lbs"
    argv = ["synth", str(source), str(out), "--type", "lbs.official", "--set", "objects=rgba"]
    assert main([*argv, "--set", f"object_dir={rgba_dir}"]) == 0
    for folder in ("input", "target", "blur_mask"):
        assert sorted(p.name for p in (out / folder).iterdir()) == ["0.png", "1.png"]
    stored = read_map(out / "blur_mask" / "0.png")
    assert stored.shape == (36, 44) and stored.dtype == np.uint8 and set(np.unique(stored)) <= {0, 255}
    node = {
        "type": "local_blur_folder",
        "input_dir": str(out / "input"),
        "target_dir": str(out / "target"),
        "mask_dir": str(out / "blur_mask"),
    }
    dataset = resolve_node("dataset", node, "data.train").build()
    sample = dataset[0]
    assert sample["blur_mask"].shape[-2:] == (36, 44) and set(sample["blur_mask"].unique().tolist()) <= {0.0, 1.0}
    assert sample["blur_mask"].sum() > 0


def test_synth_reports_a_bad_voc_folder_in_one_line(tmp_path, capsys):
    root = write_voc(tmp_path / "VOC2012", labels=False)
    argv = ["synth", "skimage", str(tmp_path / "out"), "--type", "lbs", "--set", "objects=voc"]
    assert main([*argv, "--set", f"object_dir={root}"]) != 0
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no SegmentationObject folder" in line


@pytest.mark.parametrize("name", ["lbs", "lbs.official", "lbs.paper"])
def test_lbs_passes_the_synthesizer_conformance_checks(name, rgba_dir):
    check_component("synthesizer", name, {"objects": "rgba", "object_dir": rgba_dir})


def test_object_photos_picks_the_bundled_photos_objects_are_cut_from(tmp_path):
    held_in = resolve_node("synthesizer", {"type": "lbs", "object_photos": ["astronaut", "coffee"]}).build()
    assert [name for name, _ in held_in.source.photos] == ["astronaut", "coffee"]
    with pytest.raises(ConfigError, match="object_photos picks scikit-image's photos"):
        resolve_node(
            "synthesizer", {"type": "lbs", "objects": "rgba", "object_dir": str(tmp_path), "object_photos": ["coffee"]}
        ).build()
