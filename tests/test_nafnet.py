"""NAFNet and Baseline: official key names, shapes and sizes, checkpoints, padding, prior channels, TLC, guidance.

Key names and shapes in tests/data/official/ were produced from the official models (megvii-research/NAFNet
2b4af71: NAFNet, Baseline; HPLQAQ/SAM-Deblur 9e0c8cf: NAFNet(mask=True)); parameter counts likewise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from deblurstack import ConfigError, build_stack, save_atomic
from deblurstack.cli import main
from deblurstack.plugins.nafnet.model import Baseline, LayerNorm2d, NAFNet
from deblurstack.registry import get_plugin_manager
from deblurstack.tlc import LocalAvgPool2d, enable_tlc

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
SMALL = {"width": 8, "middle_blk_num": 1, "enc_blk_nums": [1, 1], "dec_blk_nums": [1, 1]}  # pads to 4

#: parameter counts of the official models with the presets' configurations
OFFICIAL_COUNTS = {
    "nafnet.w32": 17_111_907,
    "nafnet.w64": 67_888_835,
    "nafnet.reds_w64": 67_888_835,
    "nafnet.sidd_w32": 29_159_715,
    "nafnet.sidd_w64": 115_982_915,
    "nafnet_baseline.w32": 17_023_875,
    "nafnet_baseline.w64": 112_036_291,  # the official GoPro width-64 Baseline config sets dw_expand 2
}


def small(cls: type = NAFNet, seed: int = 0, **params) -> torch.nn.Module:
    """A small model whose blocks are not the identity (random non-zero beta and gamma)."""
    torch.manual_seed(seed)
    model = cls(**{**SMALL, "enc_blk_nums": (1, 1), "dec_blk_nums": (1, 1), **params})
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("beta", "gamma")):
                parameter.normal_(0, 0.5)
    return model.eval()


def shapes(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(key, list(value.shape)) for key, value in model.state_dict().items()]


@pytest.mark.parametrize(
    "file, cls, params",
    [
        ("nafnet_w32_keys.json", NAFNet, {}),
        ("nafnet_baseline_w32_keys.json", Baseline, {}),
        ("sam_deblur_masknafnet_keys.json", NAFNet, {"in_channels": 4}),  # SAM-Deblur's CAT model
    ],
)
def test_state_dict_keys_and_shapes_are_the_official_ones(file, cls, params):
    official = json.loads((OFFICIAL / file).read_text())
    with torch.device("meta"):
        model = cls(**params)
    assert shapes(model) == list(official.items())  # same names, shapes and order


@pytest.mark.usefixtures("builtin_plugin_manager")
def test_every_preset_has_the_official_parameter_count():
    manager = get_plugin_manager()
    presets = {f"{n}.{p}" for n in ("nafnet", "nafnet_baseline") for p in manager.get("backbone", n).record.presets}
    assert presets == set(OFFICIAL_COUNTS)
    for type_name, expected in OFFICIAL_COUNTS.items():
        component, _, params = manager.resolve("backbone", type_name)
        with torch.device("meta"):
            model = component.load_factory()(**params)
        assert sum(p.numel() for p in model.parameters()) == expected, type_name
        assert model.pad_multiple == 16


@pytest.mark.usefixtures("builtin_plugin_manager")
def test_components_show_prints_the_official_size(capsys):
    assert main(["components", "show", "nafnet.w32"]) == 0
    assert "size: 17.11 M parameters (17,111,907)" in capsys.readouterr().out


@pytest.mark.usefixtures("builtin_plugin_manager")
@pytest.mark.parametrize("key", ["params", "params_ema"])
def test_official_release_files_load_strictly_through_the_yaml_checkpoint_option(tmp_path, key):
    source = small(seed=1)
    weights = tmp_path / "NAFNet-small.pth"
    save_atomic({key: source.state_dict(), "other": {}}, weights)  # the official release format
    node = {"type": "nafnet", **SMALL, "checkpoint": {"path": str(weights), "key": key}}
    loaded = build_stack({"stack": {"backbone": node}}).backbone.eval()
    x = torch.rand(1, 3, 21, 18)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


@pytest.mark.usefixtures("builtin_plugin_manager")
def test_a_file_of_another_width_names_the_mismatched_keys_in_one_line(tmp_path):
    weights = tmp_path / "w8.pth"
    save_atomic({"params": small().state_dict()}, weights)
    node = {"type": "nafnet", **SMALL, "width": 16, "checkpoint": {"path": str(weights), "key": "params"}}
    with pytest.raises(ConfigError) as caught:
        build_stack({"stack": {"backbone": node}})
    message = str(caught.value)
    assert "stack.backbone.checkpoint: " in message and "\n" not in message
    assert "shape mismatch: intro.weight (8, 3, 3, 3) in the file vs (16, 3, 3, 3) in the model" in message


@pytest.mark.parametrize("cls", [NAFNet, Baseline])
@pytest.mark.parametrize("size", [(37, 29), (17, 50), (8, 12)])
def test_odd_sizes_come_back_the_same_size(cls, size):
    model = small(cls)
    assert model.pad_multiple == 4
    with torch.no_grad():
        assert model(torch.rand(2, 3, *size)).shape == (2, 3, *size)


def test_prior_channels_change_the_output_and_the_residual_adds_the_image_channels_only():
    model = small(in_channels=5)
    image, extra = torch.rand(1, 3, 19, 23), torch.rand(1, 2, 19, 23)
    with torch.no_grad():
        out = model(torch.cat([image, extra], 1))
        assert out.shape == (1, 3, 19, 23)
        assert not torch.equal(out, model(torch.cat([image, 1 - extra], 1)))
        model.ending.weight.zero_()
        model.ending.bias.zero_()
        assert torch.equal(model(torch.cat([image, extra], 1)), image)


@pytest.mark.usefixtures("builtin_plugin_manager")
@pytest.mark.parametrize("name", ["nafnet", "nafnet_baseline"])
def test_tlc_equals_the_plain_model_up_to_one_and_a_half_times_the_training_size(name):
    plain = small(NAFNet if name == "nafnet" else Baseline)
    node = {"type": name, **SMALL, "tlc": {"train_size": 32}}  # base size 48
    local = build_stack({"stack": {"backbone": node}}).backbone.eval()
    local.load_state_dict(plain.state_dict())
    with torch.no_grad():
        for size in [(48, 48), (45, 33), (16, 20)]:  # padded to at most 48x48: pooling stays global
            x = torch.rand(1, 3, *size)
            assert torch.equal(local(x), plain(x)), size
        x = torch.rand(1, 3, 70, 90)
        assert (local(x) - plain(x)).abs().max() > 1e-4
    # 1.5x the feature size at the training size, per level: 32 -> 48 (level 0), 16 -> 24, 8 -> 12 (middle)
    expected = {"encoders.0": 48, "decoders.1": 48, "encoders.1": 24, "decoders.0": 24, "middle_blks": 12}
    kernels = {name: pool.kernel_size for name, pool in local.named_modules() if isinstance(pool, LocalAvgPool2d)}
    assert len(kernels) == 5
    for path, kernel in kernels.items():
        assert kernel == (expected[path.rsplit(".", 3)[0]],) * 2, path


def test_guidance_acts_at_each_decoder_input_with_the_declared_channels():
    model = small()
    assert model.insertion_points == {"decoder_s2": 16, "decoder_s1": 8}
    seen = {}

    def halve(point):
        def apply(features):
            seen[point] = features.shape[1]
            return features * 0.5

        return apply

    x = torch.rand(1, 3, 13, 22)
    with torch.no_grad():
        plain = model(x)
        assert torch.equal(model(x, guidance={}), plain)
        guided = model(x, guidance={point: halve(point) for point in model.insertion_points})
    assert seen == model.insertion_points
    assert not torch.equal(guided, plain)


def test_layer_norm_normalises_over_channels_per_pixel():
    norm = LayerNorm2d(6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = torch.randn(2, 6, 5, 7) * 3 + 1
    expected = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias, eps=1e-6)
    torch.testing.assert_close(norm(x), expected.permute(0, 3, 1, 2))


def test_unequal_encoder_and_decoder_depths_are_refused():
    with pytest.raises(ValueError, match="must have equal lengths"):
        NAFNet(width=8, enc_blk_nums=(1, 1), dec_blk_nums=(1,))


@pytest.mark.parametrize("cls", [NAFNet, Baseline])
@pytest.mark.parametrize("tlc", [False, True])
def test_the_inference_fast_path_equals_the_official_formulation(cls, tlc):
    model = small(cls, seed=2)
    plain = small(cls, seed=2)
    if tlc:
        assert enable_tlc(model, 16) > 0  # base size 24: the pools of the larger maps below become local
    layouts = []
    model.encoders[0][0].norm1.register_forward_pre_hook(
        lambda module, args: layouts.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    for size in [(45, 71), (64, 64), (9, 13)]:  # odd sizes are padded to a multiple of 4
        x = torch.rand(2, 3, *size)
        model.train()  # no dropout (rate 0): with autograd this is the plain official formulation
        expected = model(x)
        model.eval()
        assert torch.equal(model(x), expected)  # eval with autograd (e.g. a translator trained through it): plain
        with torch.inference_mode():
            fast = model(x)
        with torch.no_grad():
            assert torch.equal(model(x), fast)
        assert fast.shape == expected.shape and fast.is_contiguous()
        assert (fast - expected).abs().max().item() <= 1e-5, size
        if tlc and size == (64, 64):  # local pooling is in effect at this size
            with torch.no_grad():
                assert (plain(x) - fast).abs().max() > 1e-4
    assert layouts == [False, False, True, True] * 3  # the fast path ran in channels_last, the others did not


def test_tlc_from_the_command_line_changes_test_and_run_alike(tmp_path, capsys):
    """``--tlc 16`` on ``test`` and ``run``: local pooling on 64 x 80 images (base 24), noted in the summary."""
    import numpy as np
    import yaml

    from deblurstack.data import read_image, write_image

    rng = np.random.default_rng(0)
    for folder in ("input", "target"):
        write_image(tmp_path / folder / "a.png", rng.random((64, 80, 3)).astype(np.float32))
    save_atomic({"params": {f"backbone.{k}": v for k, v in small(seed=3).state_dict().items()}}, tmp_path / "w.pth")
    config = tmp_path / "c.yaml"
    dataset = {"type": "paired_folder", "input_dir": str(tmp_path / "input"), "target_dir": str(tmp_path / "target")}
    stack = {"backbone": {"type": "nafnet", **SMALL}, "checkpoint": str(tmp_path / "w.pth")}
    config.write_text(yaml.safe_dump({"stack": stack, "data": {"test": dataset}, "metrics": [{"type": "psnr"}]}))

    outputs = {}
    for tlc in ([], ["--tlc", "16"]):
        report = tmp_path / f"report{len(tlc)}"
        assert main(["test", str(config), "--out", str(report), "--save-images", *tlc]) == 0
        assert main(["run", str(config), str(tmp_path / "input"), "--out", str(tmp_path / f"run{len(tlc)}"), *tlc]) == 0
        deblurred = read_image(tmp_path / f"run{len(tlc)}" / "a.png")
        assert np.array_equal(read_image(report / "images" / "a.png"), deblurred)
        assert ("TLC: global average pools replaced by local ones" in (report / "summary.md").read_text()) == bool(tlc)
        outputs[bool(tlc)] = deblurred
    assert np.abs(outputs[True] - outputs[False]).max() > 1 / 255  # the local pools changed the result
    capsys.readouterr()

    stack["backbone"] = {"type": "unet.tiny"}
    stack.pop("checkpoint")
    config.write_text(yaml.safe_dump({"stack": stack, "data": {"test": dataset}, "metrics": [{"type": "psnr"}]}))
    assert main(["run", str(config), str(tmp_path / "input"), "--out", str(tmp_path / "x"), "--tlc", "16"]) == 2
    assert "stack.backbone.tlc: backbone 'unet.tiny' has no global average pooling, so TLC does not apply" in (
        capsys.readouterr().err
    )
