"""The ``synthesized`` dataset: pairs made from sharp photos while training, a new pair every epoch, a sample
determined by its key; its synthesizer's maps move with the crop and count as provided inputs; a bad
synthesizer node is refused by the config check; training on it resumes bit-identical."""

from __future__ import annotations

import pickle
import shutil
from typing import Annotated

import cv2
import numpy as np
import pytest
import torch
import yaml
from pydantic import Field

from deblurstack import ConfigError, Loss, LossRecord, Synthesizer, SynthesizerRecord, hookimpl, resolve_config
from deblurstack.cli import main
from deblurstack.compose import resolve_node
from deblurstack.data import ImageError, read_image, to_tensor, write_image
from deblurstack.engine.checkpoints import load_training_state
from deblurstack.engine.prepare import EMBEDDED, dead_leaves, embedded_photos, limit_side, synthesize

BLUR = {"type": "motion_blur", "kernel_size": 9, "max_length": 6.0}
PHOTOS = ["astronaut", "rocket"]


class SquareInvert(Synthesizer):
    """A test synthesizer with a map: inverts a random rectangle of the photo and marks it in ``blur_mask``.

    Args:
        min_side: smallest side of the rectangle.
    """

    def __init__(self, min_side: Annotated[int, Field(ge=1)] = 4) -> None:
        self.min_side = min_side

    def __call__(self, frames, rng):
        (sharp,) = frames
        height, width = sharp.shape[:2]
        h, w = (int(rng.integers(self.min_side, side // 2 + 1)) for side in (height, width))
        top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
        mask = np.zeros((height, width), np.float32)
        mask[top : top + h, left : left + w] = 1
        blurry = np.where(mask[..., None] > 0, 1 - sharp, sharp).astype(np.float32)
        return {"input": blurry, "target": sharp, "blur_mask": mask, "ignored": np.zeros(3)}


class MaskedL1(Loss):
    """L1 inside the blur mask (a loss that reads ``blur_mask``)."""

    def forward(self, prediction, target, blur_mask):
        return ((prediction - target).abs() * blur_mask).mean()


class TestPlugin:
    @hookimpl
    def deblurstack_synthesizers(self):
        return [
            SynthesizerRecord(
                name="square_invert",
                factory=SquareInvert,
                summary="Inverts a random rectangle (test)",
                provides=("blur_mask",),
            )
        ]

    @hookimpl
    def deblurstack_losses(self):
        return [LossRecord(name="masked_l1", factory=MaskedL1, summary="L1 in the blur mask", requires=("blur_mask",))]


@pytest.fixture
def square(register_plugin):
    register_plugin(TestPlugin(), name="synthesized-test")
    return {"type": "square_invert", "min_side": 4}


def dataset(synthesizer=None, **params):
    node = {"type": "synthesized", "sharp_dir": EMBEDDED, "photos": PHOTOS, "max_side": 64, **params}
    return resolve_node("dataset", {**node, "synthesizer": synthesizer or BLUR}, "data.train").build()


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if isinstance(a[k], torch.Tensor) else a[k] == b[k] for k in a
    )


def test_a_sample_depends_only_on_its_key_and_survives_pickling():
    data = dataset(patch_size=32, augment=True, pairs_per_image=2)
    assert len(data) == 4 and [p.name for p in data.pairs] == ["astronaut_0", "astronaut_1", "rocket_0", "rocket_1"]
    first = data[(3, 7, 2)]
    data[(1, 7, 2)], data[(3, 8, 2)]  # other samples in between change nothing
    assert equal(first, data[(3, 7, 2)])
    assert equal(first, dataset(patch_size=32, augment=True, pairs_per_image=2)[(3, 7, 2)])
    assert equal(first, pickle.loads(pickle.dumps(data))[(3, 7, 2)])  # what a loader worker holds
    assert first["input"].shape == (3, 32, 32) and first["name"] == "rocket_1"


def test_every_epoch_and_seed_gets_its_own_pair_and_fixed_pairs_stay():
    data = dataset()
    pair = data[(0, 7, 0)]
    assert not torch.equal(pair["input"], data[(0, 7, 1)]["input"])  # another epoch
    assert not torch.equal(pair["input"], data[(0, 8, 0)]["input"])  # another run seed
    assert torch.equal(pair["target"], data[(0, 7, 1)]["target"])  # the same sharp photo
    assert not torch.equal(data[0]["input"], dataset(seed=1)[0]["input"])  # another dataset seed
    fixed = dataset(fixed=True)
    assert equal(fixed[(0, 7, 0)], fixed[(0, 7, 1)]) and equal(fixed[(0, 7, 0)], fixed[(0, 8, 5)])
    assert equal(fixed[(0, 7, 3)], fixed[0]) and equal(fixed[0], data[0])  # evaluation: always the fixed pair
    cropped = dataset(fixed=True, patch_size=16)  # fixed pairs, crops still drawn from the key
    assert not torch.equal(cropped[(0, 7, 0)]["target"], cropped[(0, 7, 1)]["target"])


def test_the_pair_is_what_the_synthesizer_makes_with_the_documented_generator(tmp_path):
    data = dataset(pairs_per_image=2, seed=5)
    blur = resolve_node("synthesizer", BLUR).build()
    rocket = embedded_photos(64, ["rocket"])["rocket"]
    made = blur([rocket], np.random.default_rng([5, 1, 1, 7, 3]))  # photo 1, variant 1, run seed 7, epoch 3
    sample = data[(3, 7, 3)]
    assert torch.equal(sample["input"], to_tensor(made["input"])) and torch.equal(sample["target"], to_tensor(rocket))
    whole = blur([rocket], np.random.default_rng([5, 1, 1]))
    assert torch.equal(data[3]["input"], to_tensor(whole["input"]))
    # an int index gives the pair `deblurstack synth skimage --seed 5 --per-image 2` writes (8-bit rounded there)
    synthesize(EMBEDDED, tmp_path, blur, seed=5, per_image=2, max_side=64, names=PHOTOS)
    written = read_image(tmp_path / "input" / "rocket_1.png")
    assert np.abs(written - data[3]["input"].numpy().transpose(1, 2, 0)).max() <= 0.5 / 255 + 1e-6


def test_the_synthesizers_maps_are_cropped_and_flipped_with_the_images(square):
    data = dataset(square, patch_size=24, augment=True)
    assert data.provides == ("blur_mask",)
    partly = 0
    for epoch in range(12):
        sample = data[(epoch % 2, 3, epoch)]
        assert set(sample) == {"name", "input", "target", "blur_mask"}  # undeclared outputs are dropped
        mask = sample["blur_mask"]
        assert mask.shape == (1, 24, 24) and mask.dtype == torch.float32
        inside = mask.bool().expand(3, -1, -1)
        assert torch.equal(sample["input"][~inside], sample["target"][~inside])
        assert torch.allclose(sample["input"][inside] + sample["target"][inside], torch.ones(1), atol=1e-6)
        partly += bool(0 < mask.mean() < 1)
    assert partly >= 3  # the rectangle's edges were inside the patches, so they were checked


def test_a_window_of_the_photo_is_synthesized_and_a_folder_of_photos_is_read(tmp_path):
    photo = np.random.default_rng(0).random((50, 70, 3), dtype=np.float32)
    write_image(tmp_path / "b.png", photo)
    write_image(tmp_path / "a.png", photo[::-1])
    (tmp_path / "c.png").write_bytes(b"")  # unreadable
    node = {"type": "synthesized", "sharp_dir": str(tmp_path), "synthesizer": BLUR, "window": 40, "patch_size": 32}
    data = resolve_node("dataset", {**node, "skip_bad": True}, "data.train").build()
    assert [p.name for p in data.pairs] == ["a", "b", "c"]
    target = data[1]["target"].numpy().transpose(1, 2, 0)
    sharp = read_image(tmp_path / "b.png")
    assert target.shape == (40, 40, 3)
    assert any(np.array_equal(target, sharp[t : t + 40, x : x + 40]) for t in range(11) for x in range(31))
    assert data[(2, 0, 0)]["name"] == "a" and "c.png" in data.skipped[0]  # the next photo stands in
    with pytest.raises(ImageError, match="c.png"):
        resolve_node("dataset", node, "data.train").build()[(2, 0, 0)]
    shrunk = resolve_node("dataset", {**node, "window": None, "max_side": 35}, "data.train").build()
    assert shrunk[0]["input"].shape == (3, 25, 35)


def test_parameters_that_do_not_fit_together_are_refused_when_built():
    node = {"type": "synthesized", "sharp_dir": ".", "photos": ["rocket"], "synthesizer": BLUR}
    with pytest.raises(ConfigError, match="data.train: .*photos chooses among the bundled photos"):
        resolve_node("dataset", node, "data.train").build()
    with pytest.raises(ConfigError, match="window 16 is smaller than patch_size 32"):
        dataset(window=16, patch_size=32)


def write_config(path, train: dict, val: dict | None = None, losses=({"type": "l1"},), **options):
    config = {
        "name": "synth",
        "seed": 3,
        "stack": {"backbone": {"type": "unet.tiny"}, "losses": list(losses)},
        "data": {
            "train": {"type": "synthesized", "sharp_dir": EMBEDDED, "photos": PHOTOS, "max_side": 64, **train},
            "val": val
            or {
                "type": "synthesized",
                "sharp_dir": EMBEDDED,
                "photos": ["chelsea"],
                "max_side": 48,
                "synthesizer": BLUR,
                "fixed": True,
            },  # fmt: skip
        },
        "metrics": [{"type": "psnr"}],
        "train": {"type": "supervised", "iterations": 4, "batch_size": 2, "log_every": 100, **options},
    }
    path.write_text(yaml.safe_dump(config))
    return path


def test_config_check_refuses_a_bad_synthesizer_node_with_its_key_path(tmp_path, capsys):
    config = write_config(tmp_path / "bad.yaml", {"synthesizer": {**BLUR, "max_length": -1.0}, "patch_size": 32})
    assert main(["config", "check", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f" {config}: data.train.synthesizer: max_length: input should be greater" in lines[0]
    # what only the synthesizer's factory checks is refused too, at config check
    config = write_config(tmp_path / "bad.yaml", {"synthesizer": {**BLUR, "max_length": 40.0}})
    assert main(["config", "check", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and f" {config}: data.train.synthesizer: synthesizer 'motion_blur' could not be" in lines[0]
    assert "max_length must be <= kernel_size - 1" in lines[0]


def test_the_synthesizers_maps_count_as_inputs_the_dataset_provides(tmp_path, square, capsys):
    masked = ({"type": "l1"}, {"type": "masked_l1"})
    config = write_config(tmp_path / "blur.yaml", {"synthesizer": BLUR}, losses=masked)
    assert main(["config", "check", str(config)]) == 2
    assert "needs input 'blur_mask', which dataset 'synthesized' does not provide" in capsys.readouterr().err
    config = write_config(tmp_path / "square.yaml", {"synthesizer": square}, losses=masked)
    resolved = resolve_config(config)
    assert resolved.data["data"]["train"]["synthesizer"] == {"type": "square_invert", "min_side": 4}
    assert resolve_config(resolved.data).data == resolved.data  # the explicit config checks to itself


def test_training_on_synthesized_photos_resumes_bit_identical(tmp_path, square):
    """Two loader workers, the synthesizer's mask read by a loss: an interrupted run resumed from its step-2
    checkpoint ends with every tensor of the uninterrupted one."""
    train = {"synthesizer": square, "patch_size": 32, "augment": True, "pairs_per_image": 2}
    options = {"save_every": 2, "val_every": 2, "keep_last": 5, "num_workers": 2}
    config = write_config(tmp_path / "train.yaml", train, losses=({"type": "l1"}, {"type": "masked_l1"}), **options)
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "whole")]) == 0
    whole = tmp_path / "whole" / "synth"
    shutil.copytree(whole, tmp_path / "cut" / "synth")
    for name in ("step_00000004.pth", "best.pth"):
        (tmp_path / "cut" / "synth" / "checkpoints" / name).unlink()
    assert main(["train", str(config), "--runs-dir", str(tmp_path / "cut"), "--resume"]) == 0
    first = load_training_state(whole / "checkpoints" / "step_00000004.pth")
    again = load_training_state(tmp_path / "cut" / "synth" / "checkpoints" / "step_00000004.pth")
    assert_same(first, again, "checkpoint")  # weights, optimizer, every random state
    assert (whole / "metrics.csv").read_text() == (tmp_path / "cut" / "synth" / "metrics.csv").read_text()


def assert_same(a, b, key):
    if isinstance(a, dict):
        assert a.keys() == b.keys(), key
        for k in a:
            assert_same(a[k], b[k], f"{key}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), key
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{key}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), key
    else:
        assert a == b, key


def test_the_dataset_passes_the_conformance_checks(square):
    from deblurstack.testing import check_component

    for synthesizer in (BLUR, square):
        params = {"sharp_dir": EMBEDDED, "photos": PHOTOS, "max_side": 48, "patch_size": 16, "augment": True}
        check_component("dataset", "synthesized", {**params, "synthesizer": synthesizer})


def test_a_mixture_with_local_blur_provides_a_blur_mask_for_every_pair(tmp_path, square, capsys):
    """``mixed`` with ``lbs`` among its components: the mask of LBS pairs, the whole image for globally blurred
    ones, nothing for sharp ones; counted by the config check as an input the dataset provides."""
    from deblurstack.compose import resolve_node

    node = {
        "type": "mixed",
        "components": [{"type": "lbs"}, {"type": "defocus", "min_radius": 2.0}],
        "sharp_probability": 0.3,
    }
    mixture = resolve_node("synthesizer", node, "synthesizer").build()
    photo = np.random.default_rng(0).random((48, 64, 3), dtype=np.float32)
    kinds = set()
    for seed in range(40):
        rng = np.random.default_rng(seed)
        choice = mixture.choose(np.random.default_rng(seed))
        made = mixture([photo], rng)
        mask = made["blur_mask"]
        assert mask.shape == (48, 64) and set(np.unique(mask)) <= {0.0, 1.0}
        if choice is None:
            kinds.add("sharp")
            assert not mask.any()
        elif choice == 1:
            kinds.add("global")
            assert mask.all()
        else:
            kinds.add("local")
    assert kinds == {"sharp", "global", "local"}
    masked = ({"type": "l1"}, {"type": "masked_l1"})
    config = write_config(tmp_path / "mixed.yaml", {"synthesizer": node}, losses=masked)
    resolve_config(config)  # the masked loss finds its blur_mask: no ConfigError
    plain = write_config(
        tmp_path / "plain.yaml", {"synthesizer": {**node, "components": node["components"][1:]}}, losses=masked
    )
    assert main(["config", "check", str(plain)]) == 2  # no component makes a local mask: nothing to provide
    assert "needs input 'blur_mask'" in capsys.readouterr().err


def test_the_extra_bundled_photos_are_there_to_choose_and_motorcycle_and_grace_hopper_are_in_colour():
    # clock..text are grayscale repeated to RGB; motorcycle is the left view of scikit-image's stereo pair;
    # grace_hopper is matplotlib's sample photo (600 x 512)
    extra = embedded_photos(64, ["clock", "motorcycle", "grace_hopper"])
    assert extra["clock"].shape[-1] == 3 and np.array_equal(extra["clock"][..., 0], extra["clock"][..., 2])
    assert extra["motorcycle"].shape == (43, 64, 3) and not np.allclose(
        extra["motorcycle"][..., 0], extra["motorcycle"][..., 2]
    )
    assert extra["grace_hopper"].shape == (64, 55, 3)
    from matplotlib import cbook

    stored = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))[..., ::-1]  # BGR to RGB
    read = embedded_photos(None, ["grace_hopper"])["grace_hopper"]  # JPEG decoders may differ by a level
    assert read.shape == stored.shape and np.abs(read - stored.astype(np.float32) / 255).max() <= 2 / 255
    pairs = dataset(photos=["motorcycle", "text"])
    assert len(pairs) == 2 * pairs.pairs_per_image and pairs[0]["target"].shape == (3, 43, 64)


def test_dead_leaves_images_are_occluding_discs_of_every_scale_the_same_for_the_same_index():
    image = dead_leaves(3, 320)
    assert image.shape == (320, 320, 3) and image.dtype == np.float32 and image.min() < 0.05 and image.max() > 0.95
    assert np.array_equal(dead_leaves(3, 320), image) and not np.allclose(dead_leaves(4, 320), image)
    levels, counts = np.unique((image * 255).round().astype(np.uint8).reshape(-1, 3), axis=0, return_counts=True)
    # flat discs from a few pixels to a large share of the image, their edges blended by the area downscale
    assert (counts >= 20).sum() > 300 and counts.max() > 0.02 * counts.sum() and len(levels) > 3000
    # a bundled photo by name: 512 px square, shrunk like the photos; usable wherever bundled photos are
    assert np.array_equal(embedded_photos(64, ["dead_leaves_3"])["dead_leaves_3"], limit_side(dead_leaves(3), 64))
    background = dead_leaves(1, 48, discs=0)  # no disc: one colour everywhere
    assert (background == background[0, 0]).all() and not (dead_leaves(1, 48) == background[0, 0]).all()
    pairs = dataset(photos=["dead_leaves_0", "astronaut"])
    assert pairs[0]["target"].shape == (3, 64, 64)
    for name in ("dead_leaves_01", "dead_leaves_x", "leaves_1"):
        with pytest.raises(ConfigError, match=f"data.train.photos.0: '{name}' is not a bundled photo: one of astro"):
            dataset(photos=[name])
