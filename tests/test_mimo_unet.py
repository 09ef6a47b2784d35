"""MIMO-UNet(+): official state_dict keys and sizes, checkpoints, scales, priors, its loss, a training step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from deblurstack import ConfigError, build_stack, save_atomic
from deblurstack.plugins.mimo_unet.loss import MIMOUNetLoss
from deblurstack.plugins.mimo_unet.model import MIMOUNet
from deblurstack.registry import get_plugin_manager

OFFICIAL = Path(__file__).parent / "data" / "official"
SMALL = {"num_res": 1, "base_channel": 8}  # the full architecture with 1 ResBlock per stage, 8/16/32 channels


def preset(name: str) -> dict:
    return get_plugin_manager().resolve("backbone", f"mimo_unet.{name}")[2]


@pytest.mark.parametrize(
    "name, keys_file, parameters",
    [("base", "mimo_unet_keys.json", 6_807_171), ("plus", "mimo_unet_plus_keys.json", 16_107_651)],
)
def test_presets_have_the_official_keys_shapes_and_parameter_counts(name, keys_file, parameters):
    with torch.device("meta"):  # no memory, no initialisation
        model = MIMOUNet(**preset(name))
    official = json.loads((OFFICIAL / keys_file).read_text())
    assert {key: list(value.shape) for key, value in model.state_dict().items()} == official
    assert list(model.state_dict()) == list(official)  # the official order, too
    assert sum(p.numel() for p in model.parameters()) == parameters  # 6.81 M / 16.11 M
    assert model.insertion_points == {"decoder_s4": 128, "decoder_s2": 64, "decoder_s1": 32}


def test_only_the_plus_preset_has_dropout():
    with torch.device("meta"):
        base, plus = MIMOUNet(**preset("base")), MIMOUNet(**preset("plus"))
    assert isinstance(base.drop1, torch.nn.Identity)
    assert isinstance(plus.drop1, torch.nn.Dropout2d) and plus.drop1.p == plus.drop2.p == 0.1


def test_an_official_format_file_loads_strictly_through_the_yaml_checkpoint_option(tmp_path):
    torch.manual_seed(0)
    source = MIMOUNet(**SMALL).eval()
    weights = tmp_path / "MIMO-UNet.pkl"
    save_atomic({"model": source.state_dict(), "epoch": 3000}, weights)  # as the official train.py saves
    backbone = {"type": "mimo_unet", **SMALL, "checkpoint": {"path": str(weights), "key": "model"}}
    stack = build_stack({"stack": {"backbone": backbone}}).eval()
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(stack.backbone(x), source(x), strict=True))
    save_atomic({"model": MIMOUNet(num_res=2, base_channel=8).state_dict()}, weights)
    with pytest.raises(ConfigError, match=r"unexpected keys: Encoder\.0\.layers\.1\."):
        build_stack({"stack": {"backbone": backbone}})


def zero_heads(model: MIMOUNet) -> MIMOUNet:
    """Zero the three output convolutions: every output is then its residual input alone."""
    for head in (model.ConvsOut[0], model.ConvsOut[1], model.feat_extract[5]):
        torch.nn.init.zeros_(head.main[0].weight)
        torch.nn.init.zeros_(head.main[0].bias)
    return model


@pytest.mark.parametrize("in_channels", [3, 5])
def test_odd_sizes_give_three_scales_residual_on_the_nearest_downsampled_image(in_channels):
    torch.manual_seed(0)
    model = MIMOUNet(in_channels, **SMALL).eval()
    x = torch.rand(2, in_channels, 37, 29)
    with torch.no_grad():
        outputs = model(x)
        assert [tuple(o.shape) for o in outputs] == [(2, 3, 9, 7), (2, 3, 18, 14), (2, 3, 37, 29)]
        for out, k in zip(zero_heads(model)(x), (4, 2, 1), strict=True):
            expected = x[:, :3, ::k, ::k][..., : 37 // k, : 29 // k]  # nearest, as F.interpolate(scale_factor=1/k)
            assert torch.equal(expected, F.interpolate(x, scale_factor=1 / k)[:, :3])
            assert torch.equal(out, expected)


def test_prior_channels_change_the_output():
    torch.manual_seed(0)
    model = MIMOUNet(5, **SMALL).eval()
    x = torch.rand(1, 5, 20, 20)
    with torch.no_grad():
        first, changed = model(x)[-1], model(torch.cat([x[:, :3], 1 - x[:, 3:]], 1))[-1]
    assert first.shape == (1, 3, 20, 20) and not torch.equal(first, changed)


def reference_loss(outputs: list[torch.Tensor], target: torch.Tensor, fft_weight: float = 0.1) -> torch.Tensor:
    """The official formula, with the 2-D DFT written as matrix products."""

    def dft(x: torch.Tensor) -> torch.Tensor:
        def matrix(n: int) -> torch.Tensor:
            k = torch.arange(n, dtype=torch.float64)
            return torch.exp(-2j * torch.pi * torch.outer(k, k) / n)

        y = matrix(x.shape[-2]) @ x.to(torch.complex128) @ matrix(x.shape[-1])
        return torch.stack([y.real, y.imag], dim=-1)

    total = torch.zeros((), dtype=torch.float64)
    for out, factor in zip(outputs, (0.25, 0.5, 1.0)[-len(outputs) :], strict=True):
        label = target if factor == 1 else F.interpolate(target, scale_factor=factor, mode="bilinear")
        total = total + (out - label).abs().mean() + fft_weight * (dft(out) - dft(label)).abs().mean()
    return total


def test_the_loss_follows_the_official_formula_and_is_zero_for_a_perfect_prediction():
    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 24, generator=generator)
    outputs = [torch.rand(2, 3, 32 // k, 24 // k, generator=generator) for k in (4, 2, 1)]
    loss = MIMOUNetLoss()
    assert torch.allclose(loss(outputs, target).double(), reference_loss(outputs, target), rtol=1e-5)
    assert torch.allclose(loss(outputs[-1:], target).double(), reference_loss(outputs[-1:], target), rtol=1e-5)
    assert torch.equal(loss(outputs[-1], target), loss(outputs[-1:], target))
    halved = MIMOUNetLoss(fft_weight=0.05)(outputs, target).double()
    assert torch.allclose(halved, reference_loss(outputs, target, fft_weight=0.05), rtol=1e-5)
    perfect = [F.interpolate(target, scale_factor=s, mode="bilinear") for s in (0.25, 0.5)] + [target]
    assert loss(perfect, target) == 0
    with pytest.raises(ValueError, match=r"output 0 of 3 is \(2, 3, 16, 12\), but the target x0.25"):
        loss([outputs[1], outputs[1], outputs[2]], target)


def test_a_yaml_stack_trains_one_step_with_every_scale_in_the_loss(tmp_path):
    config = tmp_path / "mimo.yaml"
    config.write_text(
        "stack:\n"
        "  backbone: {type: mimo_unet.plus, num_res: 1, base_channel: 8}\n"
        "  losses:\n"
        "    - {type: mimo_unet, weight: 1.0}\n"
    )
    torch.manual_seed(0)
    stack = build_stack(config)
    target = torch.rand(2, 3, 36, 28)
    data = {"input": (target + 0.05 * torch.randn(target.shape)).clamp(0, 1), "target": target}
    output = stack.run(data["input"])
    assert [tuple(s.shape[-2:]) for s in output.scales] == [(9, 7), (18, 14), (36, 28)]
    total, terms = stack.compute_loss(output, data)
    assert set(terms) == {"mimo_unet"}
    assert torch.equal(total, MIMOUNetLoss()(output.scales, target))  # all three scales reached the loss
    optimizer = torch.optim.Adam(stack.parameters(), lr=1e-4)
    before = stack.backbone.SCM1.conv.main[0].weight.detach().clone()
    total.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in stack.parameters())
    optimizer.step()
    assert not torch.equal(before, stack.backbone.SCM1.conv.main[0].weight)  # the 1/4 input branch learns
