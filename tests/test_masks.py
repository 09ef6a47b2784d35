"""Mask-source caching, `deblurstack masks`, pre-deblurring, and masks through training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from deblurstack import build_stack, resolve_config, save_atomic
from deblurstack.cli import main
from deblurstack.data import Pair, write_image
from deblurstack.masks import CachedSource, MaskError, PredeblurredSource, decode_map, encode_map

PAIR = Pair("photo", "photo.png", "photo.png")  # type: ignore[arg-type]


def rng_image(seed=0, size=(24, 32)):
    return np.random.default_rng(seed).random((*size, 3), dtype=np.float32)


class Counter:
    def __init__(self):
        self.calls = 0

    def __call__(self, image, pair):
        self.calls += 1
        return (image[..., 0] * 10).astype(np.int32)


@pytest.mark.parametrize(
    "array",
    [
        np.arange(12, dtype=np.int64).reshape(3, 4) * 20,
        np.arange(12, dtype=np.int32).reshape(3, 4) * 5000,
        np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4),
    ],
)
def test_maps_round_trip_losslessly(tmp_path, array):
    suffix, payload = encode_map(array)
    (tmp_path / f"m{suffix}").write_bytes(payload)
    assert np.array_equal(decode_map(tmp_path / f"m{suffix}"), array)


def test_a_label_map_beyond_16_bits_is_refused():
    with pytest.raises(MaskError, match=r"values 0..70000 does not fit 16-bit PNG"):
        encode_map(np.array([[0, 70000]]))


def test_the_cache_computes_once_per_image_and_parameter_set(tmp_path):
    counter = Counter()
    cached = CachedSource(counter, tmp_path, {"type": "x", "scale": 1})
    first = cached(rng_image(0), PAIR)
    assert np.array_equal(cached(rng_image(0), PAIR), first) and counter.calls == 1
    cached(rng_image(1), PAIR)  # another image
    assert counter.calls == 2 and cached.generated == 2
    CachedSource(counter, tmp_path, {"type": "x", "scale": 2})(rng_image(0), PAIR)  # other parameters
    assert counter.calls == 3
    CachedSource(counter, tmp_path, {"type": "x", "scale": 1})(rng_image(0), PAIR)  # a new process, same key
    assert counter.calls == 3


@pytest.mark.parametrize("damage", ["truncate", "wrong_size"])
def test_a_corrupt_entry_is_detected_and_computed_again(tmp_path, damage):
    counter = Counter()
    cached = CachedSource(counter, tmp_path, {"type": "x"})
    expected = cached(rng_image(), PAIR)
    entry = next(tmp_path.rglob("*.png"))
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[:20])
    else:
        suffix, payload = encode_map(np.zeros((5, 5), np.int32))
        entry.write_bytes(payload)
    assert np.array_equal(cached(rng_image(), PAIR), expected) and counter.calls == 2
    assert np.array_equal(decode_map(entry), expected)  # repaired on disk


def test_a_missing_map_without_a_working_source_names_the_image_and_the_command(tmp_path):
    def unavailable(image, pair):
        from deblurstack import DeblurstackError

        raise DeblurstackError("sam_vit_h.pth: no such checkpoint")

    with pytest.raises(
        MaskError,
        match=r"photo.png: no cached map in .* and it cannot be computed here \(sam_vit_h.pth"
        r": no such checkpoint\); compute the maps with `deblurstack masks CONFIG`",
    ):
        CachedSource(unavailable, tmp_path, {})(rng_image(), PAIR)


def test_predeblurring_hands_the_stack_output_to_the_source(tmp_path):
    config = tmp_path / "deblur.yaml"
    config.write_text(yaml.safe_dump({"stack": {"backbone": {"type": "unet.tiny"}}}))
    stack = build_stack(config).eval()
    save_atomic({"params": stack.state_dict()}, tmp_path / "deblur.pth")
    seen = []
    source = PredeblurredSource(
        lambda image, pair: seen.append(image) or np.zeros(image.shape[:2], int), config, tmp_path / "deblur.pth"
    )
    image = rng_image()
    source(image, PAIR)
    with torch.inference_mode():
        expected = stack(torch.from_numpy(image.transpose(2, 0, 1).copy())[None]).clamp(0, 1)[0].permute(1, 2, 0)
    assert np.allclose(seen[0], expected.numpy(), atol=1e-6) and not np.allclose(seen[0], image)


@pytest.fixture
def paired(tmp_path):
    for index, name in enumerate(["a", "b", "c"]):
        write_image(tmp_path / "data" / "input" / f"{name}.png", rng_image(index, (40, 48)))
        write_image(tmp_path / "data" / "target" / f"{name}.png", rng_image(index + 10, (40, 48)))
    return tmp_path


def config_with_masks(root, **source):
    return {
        "name": "masked",
        "stack": {"priors": [{"type": "label_mean"}], "backbone": {"type": "unet.tiny"}, "losses": [{"type": "l1"}]},
        "data": {
            "train": {
                "type": "paired_folder",
                "input_dir": str(root / "data/input"),
                "target_dir": str(root / "data/target"),
                "patch_size": 32,
                "augment": True,
                "aux": {"masks": {"type": "counting_blocks", "cache": str(root / "cache"), **source}},
            }
        },
        "train": {"type": "supervised", "iterations": 6, "batch_size": 2, "log_every": 1000},
    }


@pytest.mark.usefixtures("test_components")
def test_masks_command_then_training_generates_no_mask_again(paired, capsys, monkeypatch):
    from deblurstack.registry import get_plugin_manager

    counting = get_plugin_manager().get("mask_source", "counting_blocks").load_factory()
    monkeypatch.setattr(counting, "calls", 0)
    config = paired / "masked.yaml"
    config.write_text(yaml.safe_dump(config_with_masks(paired)))
    assert main(["masks", str(config)]) == 0
    assert "data.train: 3 images, 3 maps computed, 0 already cached" in capsys.readouterr().out
    assert main(["masks", str(config)]) == 0  # a second run (or a resumed one) computes only what is missing
    assert "3 images, 0 maps computed, 3 already cached" in capsys.readouterr().out
    assert counting.calls == 3
    assert main(["train", str(config), "--runs-dir", str(paired / "runs")]) == 0  # 4 epochs of 3 images
    assert counting.calls == 3


@pytest.mark.usefixtures("test_components")
def test_without_precomputing_masks_are_generated_in_the_first_epoch_only(paired, monkeypatch):
    from deblurstack.registry import get_plugin_manager

    counting = get_plugin_manager().get("mask_source", "counting_blocks").load_factory()
    monkeypatch.setattr(counting, "calls", 0)
    config = paired / "masked.yaml"
    data = config_with_masks(paired)
    data["train"]["iterations"] = 9  # six epochs
    config.write_text(yaml.safe_dump(data))
    assert main(["train", str(config), "--runs-dir", str(paired / "runs")]) == 0
    assert counting.calls == 3


@pytest.mark.usefixtures("test_components")
def test_training_from_a_cache_needs_no_working_source_and_says_what_to_run_when_one_is_missing(paired, monkeypatch):
    from deblurstack import DeblurstackError
    from deblurstack.registry import get_plugin_manager

    config = paired / "masked.yaml"
    config.write_text(yaml.safe_dump(config_with_masks(paired)))
    assert main(["masks", str(config)]) == 0

    def unavailable(self, image, pair):
        raise DeblurstackError("the segmentation model is not installed here")

    counting = get_plugin_manager().get("mask_source", "counting_blocks").load_factory()
    monkeypatch.setattr(counting, "__call__", unavailable)
    dataset = resolve_config(config).build_dataset("train")
    assert all(dataset[i]["masks"].shape == (40, 48) for i in range(3))  # served from the cache
    write_image(paired / "data" / "input" / "d.png", rng_image(5, (40, 48)))
    write_image(paired / "data" / "target" / "d.png", rng_image(6, (40, 48)))
    with pytest.raises(MaskError, match=r"d.png: no cached map in .*compute the maps with `deblurstack masks CONFIG`"):
        resolve_config(config).build_dataset("train")[3]
