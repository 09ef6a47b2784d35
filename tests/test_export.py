"""ONNX export of every built-in backbone, run with onnxruntime and compared with PyTorch."""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
import yaml

from deblurstack import build_stack, save_atomic
from deblurstack.cli import main
from deblurstack.engine.export import CHECK_SIZE, export_onnx

#: a small configuration of every built-in backbone (exporting is slow for big ones)
SMALL = {
    "unet": {"type": "unet.tiny"},
    "nafnet": {"type": "nafnet", "width": 8, "enc_blk_nums": [1, 1], "middle_blk_num": 1, "dec_blk_nums": [1, 1]},
    "nafnet_baseline": {
        "type": "nafnet_baseline",
        "width": 8,
        "enc_blk_nums": [1, 1],
        "middle_blk_num": 1,
        "dec_blk_nums": [1, 1],
    },
    "restormer": {"type": "restormer", "dim": 8, "num_blocks": [1, 0, 0, 0], "num_refinement_blocks": 0},
    "mimo_unet": {"type": "mimo_unet", "num_res": 1},
    "timm_unet": {"type": "timm_unet", "encoder": "resnet18"},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_builtin_backbone_exports_to_onnx_and_matches_on_another_size(tmp_path, name):
    stack = build_stack({"stack": {"backbone": SMALL[name]}}).eval()
    route, difference = export_onnx(stack, tmp_path / f"{name}.onnx")
    assert difference <= 1e-4 and route in ("torch.export", "TorchScript trace")
    session = onnxruntime.InferenceSession(str(tmp_path / f"{name}.onnx"), providers=["CPUExecutionProvider"])
    odd = torch.rand(1, 3, 45, 71)  # neither the export nor the check size
    with torch.inference_mode():
        expected = stack(odd).numpy()
    assert np.abs(session.run(None, {"image": odd.numpy()})[0] - expected).max() <= 1e-4


def test_a_stack_keeping_the_input_low_frequencies_exports_with_torch_export_for_every_size(tmp_path):
    """Its low-pass reflects borders without a size branch, so torch.export follows it (a branch on the size made it
    fall back to the trace, which fixed the padding to the traced size's); small and large images alike match."""
    stack = build_stack({"stack": {"backbone": {"type": "unet.tiny"}, "keep_input_low_frequencies": 16}}).eval()
    route, difference = export_onnx(stack, tmp_path / "kept.onnx")
    assert route == "torch.export" and difference <= 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "kept.onnx"), providers=["CPUExecutionProvider"])
    for size in ((16, 24), (45, 71), (96, 112)):  # sides below, about and above the kernel's radius (48)
        image = torch.rand(1, 3, *size)
        with torch.inference_mode():
            expected = stack(image).numpy()
        assert np.abs(session.run(None, {"image": image.numpy()})[0] - expected).max() <= 1e-4, size


def test_builtin_backbones_all_have_a_small_export_configuration():
    from deblurstack.registry import PluginManager

    manager = PluginManager()
    manager.load_entrypoints(distributions={"deblurstack"})
    assert set(manager.components("backbone")) == set(SMALL)


def test_the_export_command_uses_the_checkpoint_weights(tmp_path, capsys):
    config = tmp_path / "stack.yaml"
    config.write_text(yaml.safe_dump({"stack": {"backbone": {"type": "unet.tiny"}}}))
    trained = build_stack(config)
    with torch.no_grad():
        for parameter in trained.parameters():  # weights unlike the initial ones, of a trained network's size
            parameter.add_(0.05 * torch.randn_like(parameter))
    save_atomic({"params": trained.state_dict()}, tmp_path / "weights.pth")
    assert (
        main(["export", str(config), str(tmp_path / "model.onnx"), "--checkpoint", str(tmp_path / "weights.pth")]) == 0
    )
    assert f"on a {CHECK_SIZE[0]}x{CHECK_SIZE[1]} input it differs from PyTorch by at most" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 3, 40, 52)
    with torch.inference_mode():
        expected = trained.eval()(image).numpy()
    assert np.abs(session.run(None, {"image": image.numpy()})[0] - expected).max() <= 1e-4


@pytest.mark.usefixtures("test_components")
def test_a_stack_whose_prior_needs_masks_cannot_be_exported(tmp_path, capsys):
    config = tmp_path / "stack.yaml"
    config.write_text(
        yaml.safe_dump({"stack": {"priors": [{"type": "label_mean"}], "backbone": {"type": "unet.tiny"}}})
    )
    assert main(["export", str(config), str(tmp_path / "model.onnx")]) == 2
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith("stack.priors[0]: prior 'label_mean' needs input masks; exported stacks take the image only")
    )
