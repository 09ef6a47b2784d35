"""Image files, pairing, crops and the 8 flips/rotations, the training sampler, dataset layouts."""

from __future__ import annotations

import itertools
import re
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deblurstack.data import (
    ImageError,
    Pair,
    PairedImageDataset,
    TrainingSampler,
    dihedral,
    pair_by_name,
    read_image,
    write_image,
)
from deblurstack.registry import get_plugin_manager


def photo(height=48, width=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((height, width, 3), dtype=np.float32)


def write_pairs(root: Path, names, height=48, width=64, masks=False):
    for i, name in enumerate(names):
        write_image(root / "input" / f"{name}.png", photo(height, width, i))
        write_image(root / "target" / f"{name}.png", photo(height, width, 100 + i))
        if masks:
            mask = np.zeros((height, width), np.float32)
            mask[: height // 2] = 1
            write_image(root / "mask" / f"{name}.png", mask)
    return root


# ---------------------------------------------------------------- files


def test_images_round_trip_at_8_and_16_bits(tmp_path):
    image = photo()
    write_image(tmp_path / "a.png", image)
    write_image(tmp_path / "b.png", image, bit_depth=16)
    assert np.abs(read_image(tmp_path / "a.png") - image).max() <= 0.5 / 255 + 1e-6
    assert np.abs(read_image(tmp_path / "b.png") - image).max() <= 0.5 / 65535 + 1e-7
    assert cv2.imread(str(tmp_path / "b.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16


def test_exif_orientation_is_applied_and_grayscale_becomes_rgb(tmp_path):
    from PIL import Image

    pixels = np.zeros((20, 40, 3), np.uint8)
    pixels[:, :10] = 255  # a white band on the left of a landscape image
    picture = Image.fromarray(pixels)
    exif = picture.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    picture.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=100)
    shown = read_image(tmp_path / "rotated.jpg")
    assert shown.shape == (40, 20, 3) and shown[:10].mean() > 0.9 and shown[-10:].mean() < 0.1
    cv2.imwrite(str(tmp_path / "gray.png"), np.full((8, 8), 128, np.uint8))
    with pytest.warns(UserWarning, match="gray.png: grayscale"):
        gray = read_image(tmp_path / "gray.png")
    assert gray.shape == (8, 8, 3) and np.allclose(gray, 128 / 255)


def test_pairs_match_by_name_not_by_listing_order(tmp_path):
    names = ["10", "2", "1"]
    write_pairs(tmp_path, names)
    for name in names:  # input files written again in another order: names still decide
        write_image(tmp_path / "input" / f"{name}.png", photo(seed=int(name)))
    pairs = pair_by_name(tmp_path / "input", tmp_path / "target")
    assert [(p.name, p.input.name, p.target.name) for p in pairs] == [
        ("1", "1.png", "1.png"),
        ("10", "10.png", "10.png"),
        ("2", "2.png", "2.png"),
    ]


def test_unmatched_and_missing_files_are_errors_naming_them(tmp_path):
    write_pairs(tmp_path, ["a", "b"])
    (tmp_path / "target" / "b.png").unlink()
    with pytest.raises(ImageError, match=r"input/b.png has no match in .*target \(1 unmatched file\(s\)\)"):
        pair_by_name(tmp_path / "input", tmp_path / "target")
    with pytest.raises(ImageError, match=r"nowhere: no such folder"):
        pair_by_name(tmp_path / "nowhere", tmp_path / "target")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageError, match=r"empty: no images"):
        pair_by_name(tmp_path / "empty", tmp_path / "target")


# ---------------------------------------------------------------- geometry


def test_the_eight_transforms_are_the_dihedral_group():
    square = np.arange(16).reshape(4, 4)
    results = {dihedral(square, t).tobytes() for t in range(8)}
    expected = {np.rot90(flip, k).tobytes() for flip in (square, square[:, ::-1]) for k in range(4)}
    assert results == expected and len(results) == 8


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 40), st.integers(8, 40), st.integers(0, 2**31 - 1))
def test_masks_stay_aligned_with_images_under_crops_and_all_transforms(height, width, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 50, (height, width))
    image = np.repeat((labels / 50.0).astype(np.float32)[..., None], 3, axis=2)
    dataset = PairedImageDataset([Pair("x", Path("x"), Path("x"))], patch_size=8, augment=True)
    arrays = {"input": image, "target": image, "masks": labels, "blur_mask": (labels % 2).astype(np.float32)}
    seen = set()
    for key in range(16):
        out = dataset.transform(dict(arrays), np.random.default_rng([seed, key]), dataset.pairs[0])
        assert out["input"].shape == (8, 8, 3) and out["masks"].shape == (8, 8)
        assert np.array_equal(np.rint(out["input"][..., 0] * 50).astype(int), out["masks"])
        assert np.array_equal(out["blur_mask"], (out["masks"] % 2).astype(np.float32))
        seen.add(out["masks"].tobytes())
    assert len(seen) > 1


def test_samples_depend_only_on_their_key(tmp_path):
    write_pairs(tmp_path, ["a", "b"], masks=True)
    dataset = PairedImageDataset(
        pair_by_name(tmp_path / "input", tmp_path / "target", {"blur_mask": tmp_path / "mask"}),
        patch_size=16,
        augment=True,
    )
    first, again, other = dataset[(1, 7, 0)], dataset[(1, 7, 0)], dataset[(1, 7, 1)]
    assert all(torch.equal(first[k], again[k]) for k in ("input", "target", "blur_mask"))
    assert not torch.equal(first["input"], other["input"])
    assert first["input"].shape == (3, 16, 16) and first["blur_mask"].shape == (1, 16, 16)
    whole = dataset[1]
    assert whole["input"].shape == (3, 48, 64) and whole["name"] == "b"


def test_small_images_are_padded_or_refused(tmp_path):
    write_pairs(tmp_path, ["small"], height=20, width=30)
    pairs = pair_by_name(tmp_path / "input", tmp_path / "target")
    padded = PairedImageDataset(pairs, patch_size=32)[(0, 0, 0)]
    assert padded["input"].shape == (3, 32, 32)
    with pytest.raises(ImageError, match=r"small.png is 30x20, smaller than patch_size 32"):
        PairedImageDataset(pairs, patch_size=32, small_images="error")[(0, 0, 0)]


def test_a_pair_of_different_sizes_names_both_files(tmp_path):
    write_pairs(tmp_path, ["a"])
    write_image(tmp_path / "target" / "a.png", photo(40, 64))
    dataset = PairedImageDataset(pair_by_name(tmp_path / "input", tmp_path / "target"))
    with pytest.raises(ImageError, match=r"input/a.png is 64x48 but .*target/a.png is 64x40"):
        dataset[0]


def test_skip_bad_replaces_an_unreadable_pair_in_training_only_and_lists_it(tmp_path):
    write_pairs(tmp_path, ["a", "b"])
    (tmp_path / "input" / "a.png").write_bytes(b"truncated")
    pairs = pair_by_name(tmp_path / "input", tmp_path / "target")
    with pytest.raises(ImageError, match="a.png: not a readable image"):
        PairedImageDataset(pairs)[(0, 1, 0)]
    dataset = PairedImageDataset(pairs, skip_bad=True)
    assert dataset[(0, 1, 0)]["name"] == "b"  # a training key: the batch stays full
    assert len(dataset.skipped) == 1 and "a.png" in dataset.skipped[0]
    with pytest.raises(ImageError, match="a.png"):  # a whole sample (evaluation): never another image instead
        dataset[0]


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", "the file is empty"),
        (b"\x89PNG\r\n\x1a\n truncated", "truncated or unknown format"),
        (b"not an image", "truncated or unknown format"),
        ("huge", "too large to decode"),
    ],
)
def test_an_unreadable_image_is_one_error_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "bad.png"
    path.write_bytes(huge_png_header() if content == "huge" else content)
    with pytest.raises(ImageError, match=rf"^{re.escape(str(path))}: not a readable image.*{problem}"):
        read_image(path)


def huge_png_header(side: int = 200_000) -> bytes:
    """A PNG whose header claims ``side x side`` pixels (OpenCV refuses to allocate them)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "channels, warning", [(1, "grayscale, read as RGB"), (4, "has an alpha channel, which is dropped")]
)
def test_reading_a_grayscale_or_rgba_image_warns_naming_the_file(tmp_path, channels, warning):
    path = tmp_path / "odd.png"
    cv2.imwrite(str(path), np.full((8, 8, channels) if channels > 1 else (8, 8), 128, np.uint8))
    with pytest.warns(UserWarning, match=rf"{re.escape(str(path))}: {warning}"):
        image = read_image(path)
    assert image.shape == (8, 8, 3)


def test_aux_sources_run_on_the_whole_image_before_cropping(tmp_path):
    write_pairs(tmp_path, ["a"])
    seen = []

    def rows(image, pair):
        seen.append((pair.name, image.shape))
        return np.repeat(np.arange(image.shape[0])[:, None], image.shape[1], axis=1)

    sample = PairedImageDataset(
        pair_by_name(tmp_path / "input", tmp_path / "target"), patch_size=16, aux_sources={"masks": rows}
    )[(0, 3, 0)]
    assert seen == [("a", (48, 64, 3))]
    assert sample["masks"].dtype == torch.int64 and sample["masks"].shape == (16, 16)


# ---------------------------------------------------------------- sampling


def test_the_sampler_resumes_where_it_stood_and_covers_every_epoch():
    stream = list(itertools.islice(iter(TrainingSampler(10, seed=3)), 35))
    assert sorted(key[0] for key in stream[:10]) == list(range(10))
    assert stream[:10] != stream[10:20]  # a new permutation each epoch
    resumed = list(itertools.islice(iter(TrainingSampler(10, seed=3, start=17)), 18))
    assert resumed == stream[17:]


def test_two_ranks_see_the_samples_one_process_sees():
    batch, world, steps = 4, 2, 6  # 12 samples: an epoch is 3 steps, so this spans two epochs
    single = list(itertools.islice(iter(TrainingSampler(12, seed=1)), steps * batch))
    ranks = [
        list(itertools.islice(iter(TrainingSampler(12, seed=1, rank=r, world_size=world)), steps * batch // world))
        for r in range(world)
    ]
    half = batch // world
    for step in range(steps):
        together = [key for rank in ranks for key in rank[step * half : (step + 1) * half]]
        assert sorted(single[step * batch : (step + 1) * batch]) == sorted(together)


# ---------------------------------------------------------------- layouts


def build(kind_name: str, **params):
    return get_plugin_manager().get("dataset", kind_name).load_factory()(**params)


def test_gopro_nested_and_flattened_layouts_with_an_explicit_blur(tmp_path):
    for sequence in ("GOPR0372_07_00", "GOPR0384_11_01"):
        for folder in ("blur", "blur_gamma", "sharp"):
            write_image(tmp_path / "GOPRO_Large" / "test" / sequence / folder / "000047.png", photo(16, 24))
    nested = build("gopro", root=str(tmp_path / "GOPRO_Large"), split="test", blur="blur_gamma")
    assert [p.name for p in nested.pairs] == ["GOPR0372_07_00_000047", "GOPR0384_11_01_000047"]
    assert nested.pairs[0].input.parent.name == "blur_gamma"
    write_pairs(tmp_path / "GOPRO" / "train", ["GOPR0372_07_00_000047"])
    (tmp_path / "GOPRO" / "train" / "input").rename(tmp_path / "GOPRO" / "train" / "blur")
    (tmp_path / "GOPRO" / "train" / "target").rename(tmp_path / "GOPRO" / "train" / "sharp")
    flat = build("gopro", root=str(tmp_path / "GOPRO"), split="train", blur="blur")
    assert len(flat) == 1


def test_reds_val_300_keeps_frames_ending_in_9(tmp_path):
    for clip in ("000", "001"):
        for frame in range(20):
            for folder in ("val_blur_jpeg", "val_sharp"):
                write_image(tmp_path / folder / clip / f"{frame:08d}.png", photo(8, 8))
    subset = build("reds", root=str(tmp_path), split="val", blur="blur_jpeg", subset="val_300")
    assert [p.name for p in subset.pairs] == ["000_00000009", "000_00000019", "001_00000009", "001_00000019"]
    assert len(build("reds", root=str(tmp_path), split="val", blur="blur_jpeg")) == 40


def test_realblur_list_files_with_the_renamed_scene(tmp_path):
    for name in ("gt/gt_1.png", "blur/blur_1.png"):
        write_image(tmp_path / "RealBlur-J" / "scene244_reflect" / name, photo(8, 8))
    listing = tmp_path / "RealBlur_J_test_list.txt"
    listing.write_text("RealBlur-J/scene244/gt/gt_1.png RealBlur-J/scene244/blur/blur_1.png \n")
    dataset = build("realblur", list_file=str(listing), root=str(tmp_path))
    assert dataset.pairs[0].target.parts[-3:] == ("scene244_reflect", "gt", "gt_1.png")
    listing.write_text("a.png b.png c.png\n")
    with pytest.raises(ImageError, match=r"RealBlur_J_test_list.txt:1: expected two paths, found 3"):
        build("realblur", list_file=str(listing), root=str(tmp_path))


def test_reloblur_pairs_carry_their_masks(tmp_path):
    base = tmp_path / "dataset" / "test" / "scene1" / "00"
    write_image(base / "00_sharp.png", photo(8, 8))
    write_image(base / "00_blur.png", photo(8, 8, 1))
    mask = np.zeros((8, 8), np.float32)
    mask[2:5] = 1
    write_image(tmp_path / "masks" / "test" / "scene1" / "00" / "00.png", mask)
    sample = build("reloblur", root=str(tmp_path), split="test")[0]
    assert sample["name"] == "scene1_00_00"
    assert sample["blur_mask"].sum() == 24 and sample["blur_mask"].shape == (1, 8, 8)


def test_paired_list_column_order(tmp_path):
    write_pairs(tmp_path, ["x"])
    (tmp_path / "list.txt").write_text("target/x.png input/x.png\n")
    dataset = build("paired_list", list_file=str(tmp_path / "list.txt"), order="target input")
    assert dataset.pairs[0].input.parent.name == "input"
