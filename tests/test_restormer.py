"""Restormer backbone: official key names and size, official-format checkpoints, padding, channels, guidance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deblurstack import build_stack, save_atomic
from deblurstack.plugins import restormer
from deblurstack.plugins.restormer.model import LayerNorm, Restormer

#: key -> shape of the official motion-deblurring model (swz30/Restormer restormer_arch.py, Deblurring_Restormer.yml)
OFFICIAL_KEYS = Path(__file__).parent / "data" / "official" / "restormer_motion_keys.json"
SMALL = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1, "heads": (1, 2, 2, 4)}


def preset(name: str) -> dict:
    (record,) = restormer.deblurstack_backbones()
    return dict(record.presets[name])


def small(seed: int = 0, **params) -> Restormer:
    torch.manual_seed(seed)
    return Restormer(**{**SMALL, **params}).eval()


def test_motion_preset_has_the_official_keys_and_shapes():
    with torch.device("meta"):
        model = Restormer(**preset("motion"))
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    assert ours == json.loads(OFFICIAL_KEYS.read_text())


@pytest.mark.parametrize("name, count", [("motion", 26_126_644), ("denoise", 26_111_668)])
def test_parameter_count_is_the_papers_26_13_million(name, count):
    with torch.device("meta"):
        model = Restormer(**preset(name))
    assert sum(p.numel() for p in model.parameters()) == count


def test_an_official_format_file_loads_strictly_through_the_checkpoint_option(tmp_path):
    shapes = json.loads(OFFICIAL_KEYS.read_text())
    state = {key: torch.full(shape, i / len(shapes)) for i, (key, shape) in enumerate(shapes.items())}
    path = tmp_path / "motion_deblurring.pth"
    save_atomic({"params": state}, path)
    node = {"type": "restormer.motion", "checkpoint": {"path": str(path), "key": "params", "strict": True}}
    model = build_stack({"stack": {"backbone": node}}).backbone
    assert all(torch.equal(model.state_dict()[key], value) for key, value in state.items())


@pytest.mark.parametrize("size", [(17, 23), (8, 13), (5, 6)])
def test_odd_sizes_are_reflect_padded_to_8_and_cropped_back(size):
    model = small()
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        out = model(x)
        height, width = size
        padded = model(F.pad(x, (0, -width % 8, 0, -height % 8), mode="reflect"))
    assert out.shape == x.shape
    assert torch.allclose(out, padded[..., :height, :width], atol=1e-6)


def test_prior_channels_enter_the_embedding_and_the_residual_adds_only_the_image():
    model = small(in_channels=5)
    assert model.patch_embed.proj.weight.shape[1] == 5
    x = torch.rand(2, 5, 16, 24)
    with torch.no_grad():
        out = model(x)
        changed = model(torch.cat([x[:, :3], 1 - x[:, 3:]], dim=1))
        model.output.weight.zero_()  # the head gives zero: what remains is the residual
        residual = model(x)
    assert out.shape == (2, 3, 16, 24) and not torch.equal(out, changed)
    assert torch.equal(residual, x[:, :3])


def test_bias_free_layer_norm_does_not_subtract_the_mean():
    x = torch.randn(2, 8, 5, 7)
    offset = x + 3.0  # the same variance, a different mean
    with_bias, bias_free = LayerNorm(8, "WithBias"), LayerNorm(8, "BiasFree")
    assert bias_free.body.bias is None and [n for n, _ in bias_free.named_parameters()] == ["body.weight"]
    with torch.no_grad():
        assert torch.allclose(with_bias(offset), with_bias(x), atol=1e-5)
        std = offset.var(dim=1, keepdim=True, unbiased=False).add(1e-5).sqrt()
        assert torch.allclose(bias_free(offset), offset / std, atol=1e-6)
        assert not torch.allclose(bias_free(offset), bias_free(x), atol=1e-1)


@pytest.mark.parametrize("point, stride", [("decoder_s4", 4), ("decoder_s2", 2), ("decoder_s1", 1)])
def test_guidance_at_a_decoder_point_gets_the_declared_channels(point, stride):
    model = small()
    assert model.insertion_points == {"decoder_s4": 32, "decoder_s2": 16, "decoder_s1": 16}
    seen = []

    def halve(features):
        seen.append(tuple(features.shape))
        return features * 0.5

    x = torch.rand(1, 3, 19, 29)  # padded to 24 x 32
    with torch.no_grad():
        plain, guided = model(x), model(x, guidance={point: halve})
    assert seen == [(1, model.insertion_points[point], 24 // stride, 32 // stride)]
    assert not torch.equal(plain, guided)


def test_dual_pixel_takes_six_channels_and_has_no_global_residual():
    model = small(in_channels=6, dual_pixel_task=True)
    assert model.skip_conv.weight.shape == (16, 8, 1, 1)
    x = torch.rand(1, 6, 16, 21)
    with torch.no_grad():
        assert model(x).shape == (1, 3, 16, 21)
        model.output.weight.zero_()
        assert torch.equal(model(x), torch.zeros(1, 3, 16, 21))
    assert "skip_conv.weight" not in small().state_dict()


SMALL_RESTORMER = {"dim": 8, "num_blocks": (1, 1, 1, 1), "num_refinement_blocks": 1}


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"layer_norm": "BiasFree", "heads": (2, 2, 4, 8), "bias": True},
        {"dual_pixel_task": True, "in_channels": 6, "heads": (4, 4, 8, 8)},
    ],
    ids=["motion", "bias_free_heads_bias", "dual_pixel"],
)
def test_the_inference_fast_path_equals_the_official_formulation(monkeypatch, options):
    """Eval mode without autograd runs the channels_last, strip-by-strip formulation; training mode the official
    one. They agree on a batch of two odd-sized images cut into strips of a few rows (3 x 41 pixels), with
    non-unit temperatures and biases, and the fast path returns NCHW-contiguous images."""
    monkeypatch.setattr("deblurstack.plugins.restormer.model._STRIP_PIXELS", 3 * 41)
    torch.manual_seed(0)
    model = Restormer(**SMALL_RESTORMER, **options)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            parameter.add_(0.3 * torch.randn_like(parameter)) if name.endswith(("temperature", "bias")) else None
    image = torch.rand(2, options.get("in_channels", 3), 37, 41)
    with torch.no_grad():
        official = model.train()(image)
    with torch.inference_mode():
        fast = model.eval()(image)
    assert fast.is_contiguous() and fast.shape == official.shape
    assert (fast - official).abs().max() <= 1e-5
    with torch.no_grad():  # eval without autograd is the fast path too, with grad the official one
        assert torch.equal(model(image), fast)
    assert model(image).requires_grad and torch.allclose(model(image), official, atol=1e-6)
