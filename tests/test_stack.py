"""Stacks built from YAML: composition, forward/backward, guidance, frozen parts, checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from deblurstack import ConfigError, Stack, build_stack, save_atomic
from deblurstack.cli import main
from deblurstack.compose import explicit_stack, resolve_config
from deblurstack.testing import make_aux

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def batch(height=37, width=29, size=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    target = torch.rand(size, 3, height, width, generator=generator)
    blurry = (target + 0.05 * torch.randn(target.shape, generator=generator)).clamp(0, 1)
    return {"input": blurry, "target": target}


def test_the_example_stack_builds_and_runs_forward_and_backward():
    stack = build_stack(EXAMPLES / "unet_psnr.yaml")
    assert isinstance(stack, Stack)
    data = batch()
    output = stack.run(data["input"])
    assert output.image.shape == data["input"].shape
    total, terms = stack.compute_loss(output, data)
    assert set(terms) == {"psnr"} and torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in stack.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_a_stack_adds_nothing_to_its_backbone_when_it_has_no_priors():
    stack = build_stack({"stack": {"backbone": {"type": "unet.tiny"}}}).eval()
    x = batch()["input"]
    with torch.no_grad():
        assert torch.equal(stack(x), stack.backbone(x))


@pytest.mark.usefixtures("test_components")
def test_prior_channels_are_concatenated_and_the_backbone_widened():
    stack = build_stack(
        {
            "stack": {
                "priors": [{"type": "label_mean", "channels": 3}],
                "backbone": {"type": "unet.tiny"},
                "losses": [{"type": "l1"}],
            }
        }
    )
    assert stack.backbone.inc.double_conv[0].in_channels == 6
    data = batch()
    data["masks"] = make_aux("masks", data["input"])
    output = stack.run(data["input"], {"masks": data["masks"]})
    assert output.priors[0].channels.shape == (2, 3, 37, 29)
    assert output.image.shape == data["input"].shape
    total, _ = stack.compute_loss(output, data)
    total.backward()
    assert stack.priors[0].project.weight.grad.abs().sum() > 0  # the prior learns through the backbone


@pytest.mark.usefixtures("test_components")
def test_guidance_acts_at_insertion_points_and_adds_auxiliary_losses():
    config = {
        "stack": {
            "priors": [{"type": "spatial_gate", "points": ["decoder_s1", "decoder_s2"]}],
            "backbone": {"type": "unet.tiny"},
            "losses": [{"type": "l1", "weight": 0.5}],
        }
    }
    stack = build_stack(config)
    assert set(stack.priors[0].gates) == {"decoder_s1", "decoder_s2"}
    assert stack.priors[0].gates["decoder_s1"].in_channels == stack.backbone.insertion_points["decoder_s1"] == 16
    data = batch()
    data["blur_mask"] = make_aux("blur_mask", data["input"])
    output = stack.run(data["input"])
    assert output.priors[0].extras["decoder_s2"].shape == (2, 1, 20, 16)  # half of the input padded to 40 x 32
    total, terms = stack.compute_loss(output, data)
    assert set(terms) == {"l1", "priors.0.dice_decoder_s1", "priors.0.dice_decoder_s2"}
    assert torch.allclose(total, sum(terms.values()))
    total.backward()
    assert stack.priors[0].gates["decoder_s2"].weight.grad.abs().sum() > 0


@pytest.mark.usefixtures("test_components")
def test_a_guidance_point_the_backbone_lacks_is_reported_with_its_key_path():
    config = {
        "stack": {"priors": [{"type": "spatial_gate", "points": ["decoder_s8"]}], "backbone": {"type": "unet.tiny"}}
    }
    with pytest.raises(
        ConfigError,
        match=r"stack.priors\[0\]: prior 'spatial_gate' could not be built: ValueError: "
        r"unknown insertion points \['decoder_s8'\]",
    ):
        build_stack(config)


def test_weighted_losses_sum_to_the_total():
    stack = build_stack(
        {
            "stack": {
                "backbone": {"type": "unet.tiny"},
                "losses": [{"type": "l1", "weight": 2.0}, {"type": "l1", "weight": 0.5}, {"type": "charbonnier"}],
            }
        }
    )
    data = batch()
    output = stack.run(data["input"])
    total, terms = stack.compute_loss(output, data)
    l1 = (output.image - data["target"]).abs().mean()
    assert set(terms) == {"l1", "l1_1", "charbonnier"}
    assert torch.allclose(terms["l1"], 2 * l1) and torch.allclose(terms["l1_1"], 0.5 * l1)
    assert torch.allclose(total, 2.5 * l1 + terms["charbonnier"])


@pytest.mark.usefixtures("test_components")
def test_a_multiscale_loss_receives_every_scale_and_others_the_last():
    stack = build_stack(
        {"stack": {"backbone": {"type": "pyramid"}, "losses": [{"type": "multiscale_l1"}, {"type": "l1"}]}}
    )
    data = batch(height=32, width=40)
    output = stack.run(data["input"])
    assert [tuple(s.shape[-2:]) for s in output.scales] == [(8, 10), (16, 20), (32, 40)]
    total, terms = stack.compute_loss(output, data)
    assert stack.losses["multiscale_l1"].loss.received == 3
    assert torch.allclose(terms["l1"], (output.scales[-1] - data["target"]).abs().mean())


@pytest.mark.usefixtures("test_components")
def test_a_frozen_part_with_parameters_needs_weights_but_a_parameter_free_one_does_not():
    with pytest.raises(
        ConfigError,
        match=r"stack.backbone.frozen: a frozen backbone learns nothing from random "
        r"weights: set stack.backbone.checkpoint",
    ):
        build_stack({"stack": {"backbone": {"type": "unet.tiny", "frozen": True}}})
    stack = build_stack({"stack": {"priors": [{"type": "luma", "frozen": True}], "backbone": {"type": "unet.tiny"}}})
    assert stack.frozen == ("priors.0",)


@pytest.mark.usefixtures("test_components")
def test_guidance_for_a_point_the_backbone_does_not_offer_is_an_error():
    stack = build_stack({"stack": {"priors": [{"type": "spatial_gate"}], "backbone": {"type": "unet.tiny"}}})
    stack.priors[0].gates["decoder_s16"] = stack.priors[0].gates.pop("decoder_s1")
    with pytest.raises(ValueError, match=r"guidance for \['decoder_s16'\], which the backbone does not offer"):
        stack.run(batch()["input"])


@pytest.mark.usefixtures("test_components")
def test_a_translator_trains_while_the_frozen_backbone_keeps_its_weights(tmp_path):
    weights = tmp_path / "unet.pth"
    reference = build_stack({"stack": {"backbone": {"type": "unet.tiny"}}}).backbone
    save_atomic({"params": reference.state_dict()}, weights)
    stack = build_stack(
        {
            "stack": {
                "translator": {"type": "color_shift"},
                "backbone": {"type": "unet.tiny", "checkpoint": str(weights), "frozen": True},
                "losses": [{"type": "l1"}],
            }
        }
    )
    assert stack.frozen == ("backbone",)
    assert all(
        torch.equal(a, b)
        for a, b in zip(stack.backbone.state_dict().values(), reference.state_dict().values(), strict=True)
    )
    stack.train()
    assert stack.translator.training and not stack.backbone.training  # batch norm statistics stay fixed
    before = {k: v.clone() for k, v in stack.backbone.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in stack.parameters() if p.requires_grad], lr=0.1)
    data = batch()
    total, _ = stack.compute_loss(stack.run(data["input"]), data)
    total.backward()
    optimizer.step()
    assert stack.translator.mix.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in stack.backbone.parameters())
    assert all(torch.equal(before[k], v) for k, v in stack.backbone.state_dict().items())


def test_a_checkpoint_of_another_width_names_the_mismatched_keys(tmp_path):
    weights = tmp_path / "w8.pth"
    save_atomic({"params": build_stack({"stack": {"backbone": {"type": "unet.tiny"}}}).backbone.state_dict()}, weights)
    with pytest.raises(ConfigError) as caught:
        build_stack({"stack": {"backbone": {"type": "unet.small", "checkpoint": str(weights)}}})
    message = str(caught.value)
    assert message.startswith("<dict>: stack.backbone.checkpoint: ")
    assert "shape mismatch: inc.double_conv.0.weight (8, 3, 3, 3) in the file vs (16, 3, 3, 3) in the model" in message
    assert "missing keys: down3." in message and "\n" not in message


def test_a_checkpoint_that_needs_code_execution_is_refused(tmp_path):
    weights = tmp_path / "evil.pth"
    torch.save({"params": {}, "hook": Stack}, weights)  # pickles a class reference
    with pytest.raises(ConfigError, match="refused: the file holds a deblurstack.stack.Stack object besides tensors"):
        build_stack({"stack": {"backbone": {"type": "unet.tiny", "checkpoint": str(weights)}}})


def test_checkpoint_key_and_strictness_are_configurable(tmp_path):
    weights = tmp_path / "ema.pth"
    source = build_stack({"stack": {"backbone": {"type": "unet.tiny"}}}).backbone
    state = source.state_dict()
    save_atomic({"params": {}, "params_ema": state}, weights)
    with pytest.raises(ConfigError, match="missing keys: inc.double_conv.0.weight"):
        build_stack(
            {"stack": {"backbone": {"type": "unet.tiny", "checkpoint": {"path": str(weights), "key": "params"}}}}
        )
    loaded = build_stack({"stack": {"backbone": {"type": "unet.tiny", "checkpoint": str(weights)}}}).backbone
    # a training checkpoint with an EMA gives its EMA weights by default, as `deblurstack test` scores them
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), state.values(), strict=True))
    partial = {k: v for k, v in state.items() if k.startswith("inc.")}
    save_atomic(partial, weights)
    build_stack({"stack": {"backbone": {"type": "unet.tiny", "checkpoint": {"path": str(weights), "strict": False}}}})


def test_stack_state_dict_round_trips(tmp_path):
    config = {"stack": {"backbone": {"type": "unet.tiny"}}}
    first, second = build_stack(config).eval(), build_stack(config).eval()
    path = tmp_path / "stack.pth"
    save_atomic(first.state_dict(), path)
    second.load_state_dict(torch.load(path, weights_only=True))
    x = batch()["input"]
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


@pytest.mark.usefixtures("test_components")
def test_a_whole_stack_checkpoint_loads_our_files_and_flat_official_ones(tmp_path):
    config = {"stack": {"priors": [{"type": "label_mean"}], "backbone": {"type": "unet.tiny"}}}
    source = build_stack(config)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.add_(torch.randn_like(parameter))
    save_atomic({"params": source.state_dict()}, tmp_path / "ours.pth")
    flat = {
        key.removeprefix("backbone."): value
        for key, value in source.state_dict().items()
        if key.startswith("backbone.")
    }
    flat.update(
        {
            key.replace("priors.0.project.", "pre_project."): value
            for key, value in source.state_dict().items()
            if key.startswith("priors.0.")
        }
    )
    save_atomic({"params": flat}, tmp_path / "official.pth")
    for name in ("ours.pth", "official.pth"):
        loaded = build_stack(
            {"stack": {**config["stack"], "checkpoint": {"path": str(tmp_path / name), "key": "params"}}}
        )
        assert all(
            torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), source.state_dict().values(), strict=True)
        ), name
    with pytest.raises(
        ConfigError,
        match=r"stack.checkpoint: .*official.pth does not fit Stack: shape mismatch: backbone.inc.double_conv.0.weight "
        r"\(8, 5, 3, 3\) in the file vs \(8, 7, 3, 3\) in the model; missing keys: priors.1.project.weight",
    ):
        build_stack(
            {
                "stack": {
                    "priors": [{"type": "label_mean"}, {"type": "label_mean"}],
                    "backbone": {"type": "unet.tiny"},
                    "checkpoint": str(tmp_path / "official.pth"),
                }
            }
        )


@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("conv_bias", [True, False])
def test_folded_batch_norm_is_the_norm_after_the_convolution(affine, conv_bias):
    from torch import nn

    from deblurstack import folded_batch_norm

    torch.manual_seed(0)
    conv, norm = nn.Conv2d(4, 6, 3, padding=1, bias=conv_bias), nn.BatchNorm2d(6, affine=affine).eval()
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    if affine:
        nn.init.uniform_(norm.weight, 0.5, 1.5)
        nn.init.uniform_(norm.bias, -1, 1)
    x = torch.rand(2, 4, 9, 7)
    with torch.no_grad():
        folded = torch.nn.functional.conv2d(x, *folded_batch_norm(conv, norm), padding=1)
        assert torch.allclose(folded, norm(conv(x)), atol=1e-5)
        assert folded_batch_norm(conv, nn.Identity())[0] is conv.weight
    with pytest.raises(TypeError, match="GroupNorm"):  # another norm is not silently dropped
        folded_batch_norm(conv, nn.GroupNorm(2, 6))


@pytest.mark.parametrize(
    "in_channels, out_channels, size, channels_last",
    [
        (256, 288, (8, 12), True),  # Winograd F(4x4, 3x3)
        (320, 256, (4, 16), False),  # Winograd, from an NCHW map
        (256, 256, (28, 64), True),  # Winograd in bands of 3 tile rows, the last one of 1
        (256, 256, (6, 8), True),  # a side not a multiple of 4: the direct convolution
        (8, 16, (9, 7), True),  # too few channels: the direct convolution
    ],
)
def test_folded_conv3x3_is_the_norm_after_the_convolution(in_channels, out_channels, size, channels_last):
    from torch import nn

    from deblurstack import folded_batch_norm, folded_conv3x3

    torch.manual_seed(0)
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=in_channels != 320)  # 320: no bias
    norm = nn.BatchNorm2d(out_channels).eval()
    norm.running_mean.uniform_(-1, 1)
    norm.running_var.uniform_(0.5, 2)
    nn.init.uniform_(norm.weight, 0.5, 1.5)
    x = torch.randn(2, in_channels, *size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        expected = norm(conv(x))
        folded = folded_conv3x3(x, conv, norm)
        assert (folded - expected).abs().max() <= 1e-6 * expected.abs().max() * in_channels**0.5
        without_norm = folded_conv3x3(x, conv)
        assert (without_norm - conv(x)).abs().max() <= 1e-6 * expected.abs().max() * in_channels**0.5
        # Winograd's arithmetic differs from oneDNN's direct convolution of the same folded weights, which the
        # other cases run
        direct = torch.nn.functional.conv2d(x, *folded_batch_norm(conv, norm), padding=1)
        winograd = min(in_channels, out_channels) >= 256 and size[0] % 4 == 0 and size[1] % 4 == 0
        assert torch.equal(folded, direct) is not winograd


def test_folded_conv3x3_follows_every_change_of_the_weights_it_keeps():
    """The folded (and Winograd-transformed) weights are kept and reused, and made again whenever a value they come
    from changes: a loaded state, in-place steps (also a fused optimizer's and ``.data`` edits, which leave the
    version counters as they were), a BatchNorm's statistics updated in training, its eps, another dtype,
    modules made in inference mode."""
    from torch import nn

    from deblurstack import folded_conv3x3
    from deblurstack.contracts import _FOLDED

    torch.manual_seed(0)
    conv, norm = nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256).eval()
    x = torch.randn(1, 256, 8, 8)

    def check() -> None:
        with torch.inference_mode():
            expected = norm(conv(x))
            assert (folded_conv3x3(x, conv, norm) - expected).abs().max() <= 1e-4 * expected.abs().max()

    check()
    kept = _FOLDED[conv]
    check()
    assert _FOLDED[conv] is kept  # nothing changed: reused
    conv.load_state_dict({"weight": torch.randn(256, 256, 3, 3) / 48, "bias": torch.randn(256)})
    check()
    with torch.no_grad():
        norm.running_mean.add_(1.0)
        norm.weight.mul_(2.0)
    check()
    conv.weight.data.mul_(-1)
    check()
    conv.weight.data.copy_(torch.randint(-8, 8, conv.weight.shape) / 64)  # sums of these are exact in any order
    check()
    conv.weight.data.copy_(conv.weight.data.flip(2, 3))  # the same values elsewhere: the same sum, bit for bit
    check()
    optimizer = torch.optim.Adam([*conv.parameters(), *norm.parameters()], lr=0.1, fused=True)
    norm(conv(x)).square().mean().backward()
    optimizer.step()
    check()
    norm.train()(conv(torch.randn(4, 256, 6, 6)))  # running statistics move
    norm.eval()
    check()
    norm.eps = 0.5
    check()
    conv.double(), norm.double()
    x = x.double()
    check()
    with torch.inference_mode():  # inference tensors
        conv, norm = nn.Conv2d(256, 256, 3, padding=1).double(), nn.BatchNorm2d(256).double().eval()
        check()
        conv.weight.mul_(-1)
        check()
        assert folded_conv3x3(x[:0], conv, norm).shape == (0, 256, 8, 8)


def test_folded_conv3x3_in_bands_of_one_tile_row(monkeypatch):
    from torch import nn

    import deblurstack.contracts
    from deblurstack import folded_conv3x3

    torch.manual_seed(0)
    conv, norm = nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256).eval()
    x = torch.randn(2, 256, 12, 16)
    with torch.inference_mode():
        expected = norm(conv(x))
        whole = folded_conv3x3(x, conv, norm)
        monkeypatch.setattr(deblurstack.contracts, "_WINOGRAD_BAND_BYTES", 1)  # 3 bands of one tile row
        banded = folded_conv3x3(x, conv, norm)
    for result in (whole, banded):
        assert (result - expected).abs().max() <= 1e-5 * expected.abs().max() * 16


def test_folded_conv3x3_refuses_another_convolution_and_runs_as_it_is_with_autograd():
    from torch import nn

    from deblurstack import folded_conv3x3

    x = torch.randn(1, 4, 6, 6)
    for conv in (nn.Conv2d(4, 4, 3, padding=1, stride=2), nn.Conv2d(4, 4, 3, padding=1, padding_mode="reflect")):
        with pytest.raises(TypeError, match="folded_conv3x3 takes a 3x3 convolution"):
            folded_conv3x3(x, conv)
    conv, norm = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4).eval()
    output = folded_conv3x3(x, conv, norm)
    assert output.requires_grad and torch.equal(output, norm(conv(x)))


def test_fx_tracing_takes_the_plain_formulation_and_keeps_nothing():
    from torch import nn

    from deblurstack import folded_conv3x3, inference_fast_path

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.norm = nn.Conv2d(256, 256, 3, padding=1), nn.BatchNorm2d(256)

        def forward(self, x):
            if inference_fast_path(self):
                return folded_conv3x3(x, self.conv, self.norm)
            return self.norm(self.conv(x))

    block, x = Block().eval(), torch.randn(1, 256, 4, 4)
    with torch.no_grad():
        traced = torch.fx.symbolic_trace(block)
    assert [n.target for n in traced.graph.nodes if n.op == "call_module"] == ["conv", "norm"]
    with torch.inference_mode():
        assert torch.allclose(block(x), traced(x), atol=1e-4)


class CastAndTexture(torch.nn.Module):
    """A backbone whose residual is a colour cast plus a pixel checkerboard (at every scale it returns)."""

    def __init__(self, scales: int = 1, texture: float = 0.1) -> None:
        super().__init__()
        self.scales, self.texture = scales, texture

    def forward(self, image):
        outputs = []
        for level in reversed(range(self.scales)):
            x = torch.nn.functional.avg_pool2d(image, 2**level) if level else image
            checkers = (
                torch.arange(x.shape[-2])[:, None] + torch.arange(x.shape[-1])
            ) % 2 * 2 * self.texture - self.texture
            outputs.append(x + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1) + checkers)
        return outputs if self.scales > 1 else outputs[0]


@pytest.mark.parametrize("scales, sigma", [(1, 4.0), (3, 4.0), (3, 1.0)])
def test_keeping_the_input_low_frequencies_removes_a_colour_cast_and_keeps_fine_detail(scales, sigma):
    """Also at sigma 1 on a quarter-size scale, where the sigma shrunk with the scale (0.25) would make the
    low-pass a delta and remove the detail with the cast: it stays at one pixel there."""
    image = torch.rand(2, 3, 64, 48, generator=torch.Generator().manual_seed(0))
    free = Stack(CastAndTexture(scales)).run(image).scales
    kept = Stack(CastAndTexture(scales), keep_input_low_frequencies=sigma).run(image).scales
    for free_scale, kept_scale in zip(free, kept, strict=True):
        small = torch.nn.functional.interpolate(image, size=kept_scale.shape[-2:], mode="area")
        checkers = free_scale - small - torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
        # the cast (constant) goes entirely, the checkerboard (the highest frequency) stays
        assert torch.allclose(kept_scale - small, checkers, atol=1e-4)
        assert (free_scale - small).mean((0, 2, 3)).sub(torch.tensor([0.3, -0.2, 0.1])).abs().max() < 1e-3


@pytest.mark.parametrize("size", [(5, 7), (1, 2), (48, 49)])
def test_an_image_smaller_than_the_kernel_keeps_its_low_frequencies_and_its_detail(size):
    """Sides at or below the kernel's radius (48 at sigma 16) are reflected as often as it takes: the cast goes,
    the checkerboard (reflection keeps its parity) stays, on all of the image."""
    image = torch.rand(1, 3, *size, generator=torch.Generator().manual_seed(1))
    kept = Stack(CastAndTexture(), keep_input_low_frequencies=16.0)(image)
    checkers = CastAndTexture()(image) - image - torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)
    assert torch.allclose(kept, image + checkers, atol=1e-3)  # the truncated kernel leaves 1e-4 of a 1-D checkerboard


def test_keep_input_low_frequencies_is_built_and_written_into_the_explicit_config():
    with pytest.raises(ValueError, match="at least 1 pixel"):
        Stack(CastAndTexture(), keep_input_low_frequencies=0.5)
    config = {"stack": {"backbone": {"type": "unet.tiny"}, "keep_input_low_frequencies": 8}}
    assert build_stack(config).keep_input_low_frequencies == 8.0
    assert explicit_stack(resolve_config(config))["keep_input_low_frequencies"] == 8.0
    assert build_stack({"stack": {"backbone": {"type": "unet.tiny"}}}).keep_input_low_frequencies is None


def test_a_backbone_from_a_run_that_kept_other_low_frequencies_is_a_warning(tmp_path):
    """keep_input_low_frequencies belongs to the stack, not to the backbone's weights: a backbone taken from such a
    run into a stack without it (as a frozen deblurrer would be) computes other outputs, which is said once."""
    import warnings

    trained = {"stack": {"backbone": {"type": "unet.tiny"}, "keep_input_low_frequencies": 16.0}}
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(trained))
    save_atomic(build_stack(trained).state_dict(), tmp_path / "run" / "checkpoints" / "best.pth")
    backbone = {"type": "unet.tiny", "checkpoint": str(tmp_path / "run" / "checkpoints" / "best.pth")}
    with pytest.warns(
        UserWarning,
        match="stack.backbone.checkpoint: .*best.pth was trained in a stack with "
        "keep_input_low_frequencies 16.0, this stack has None",
    ):
        build_stack({"stack": {"backbone": backbone}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_stack({"stack": {"backbone": backbone, "keep_input_low_frequencies": 16}})


@pytest.mark.parametrize("value", [0, 0.5, -2.0, 1000, "wide", True, float("nan")])
def test_a_bad_low_frequency_sigma_is_one_line_naming_its_key(tmp_path, capsys, value):
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump({"stack": {"backbone": {"type": "unet.tiny"}, "keep_input_low_frequencies": value}}))
    assert main(["config", "check", str(path)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and f"{path}: stack.keep_input_low_frequencies: must be a Gaussian's sigma" in errors[0]
