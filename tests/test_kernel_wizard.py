"""KernelWizard (bkse, Blur2Blur's known-blur transfer): official keys, official outputs, checkpoints, sizes, VAE.

``tests/data/official/kernel_wizard_keys.json`` holds the state dict keys and shapes of the official class
(VinAIResearch/blur-kernel-space-exploring ``models/kernel_encoding/kernel_wizard.py``, commit f2fe73e, identical
to Blur2Blur's ``models/explore`` copy) built with Blur2Blur's ``options/generate_blur/augmentation.yml``
(``GOPRO_woVAE``: 49,205,187 parameters, 159 tensors). ``kernel_wizard_reference.pt`` holds, for the weights
:func:`official_weights` makes, the official outputs in eval mode for three 256 x 256 images (64 x 64 uint8
pixels repeated 4 x 4; kernel extraction needs sides of at least 256): the code of ``(sharp, blurry)`` (the
official ``forward``), ``adaptKernel(sharp, code)`` and Blur2Blur's ``set_input`` transfer ``real_B =
adaptKernel(target, mean + sigma * randn_like(mean))`` with ``(mean, sigma) = genblur(sharp, blurry)``, the two
images as every third row and column; and the same for a small ``use_vae: true`` network (nf 16, kernel_dim 128,
2/2 residual blocks, 1 extractor block): mean, sigma and ``adaptKernel(target, mean + sigma / 2)``. The random
weights make the activations large (outputs up to ~2e5), hence the relative tolerance.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor

from deblurstack.checkpoint import load_weights, save_atomic
from deblurstack.plugins.blur2blur.kernel_wizard import KernelWizard
from tests.official_weights import official_weights

OFFICIAL = Path(__file__).resolve().parent / "data" / "official"
SMALL_VAE = {"nf": 16, "kernel_dim": 128, "front_blocks": 2, "back_blocks": 2, "extractor_blocks": 1, "use_vae": True}


def _image(pixels: Tensor) -> Tensor:
    return (pixels.float() / 255).repeat_interleave(4, -1).repeat_interleave(4, -2)


def _relative(ours: Tensor, official: Tensor) -> float:
    return ((ours - official).abs().max() / official.abs().max()).item()


def _shapes(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def keys() -> dict[str, list[int]]:
    return json.loads((OFFICIAL / "kernel_wizard_keys.json").read_text())


@pytest.fixture(scope="module")
def reference() -> dict[str, Tensor]:
    return torch.load(OFFICIAL / "kernel_wizard_reference.pt", weights_only=True)


@pytest.fixture(scope="module")
def wizard(keys: dict[str, list[int]]) -> KernelWizard:
    with torch.device("meta"):  # skips the default initialisation of 49 M parameters that are replaced anyway
        model = KernelWizard()
    model.load_state_dict(official_weights(keys), strict=True, assign=True)
    return model.eval()


def test_the_state_dict_keys_and_shapes_are_the_official_ones_in_order(keys):
    with torch.device("meta"):
        model = KernelWizard()
    assert list(_shapes(model).items()) == list(keys.items())
    assert sum(p.numel() for p in model.parameters()) == 49_205_187


def test_the_official_weights_reproduce_the_code_the_adapted_image_and_the_blur2blur_transfer(wizard, reference):
    """Computed in float64, so that the comparison measures the float32 reference's own rounding and not this CPU's:
    in float32 the outputs (up to ~2e5) differ from the float64 ones by up to 5.5e-5 relative on an AMD EPYC, and
    the reference from float64 by 3e-5 (it matched float32 within 1e-5 on the machine that wrote it)."""
    sharp, blurry, target = (_image(reference[f"{name}_u8"]).double() for name in ("sharp", "blurry", "target"))
    codes = []
    wizard = wizard.double()
    hook = wizard.kernel_extractor.register_forward_hook(lambda module, args, output: codes.append(output))
    try:
        with torch.no_grad():
            adapted = wizard(sharp, blurry)  # adapt(sharp, kernel(sharp, blurry))
            transferred = wizard.transfer(target, sharp, blurry)  # the code of (sharp, blurry) onto target
    finally:
        hook.remove()
        wizard.float()
    assert codes[0].shape == (1, 512, 2, 2) and torch.equal(codes[1], codes[0])
    assert _relative(codes[0].float(), reference["kernel"]) <= 1e-5
    assert _relative(adapted[..., ::3, ::3].float(), reference["adapted_subset"]) <= 5e-5
    assert _relative(transferred[..., ::3, ::3].float(), reference["real_b_subset"]) <= 5e-5


def test_forward_and_transfer_compose_kernel_and_adapt():
    model = KernelWizard(**{**SMALL_VAE, "use_vae": False}).eval()
    sharp, blurry, target = torch.rand(3, 1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        code, sigma = model.encode(sharp, blurry)
        assert code.shape == (1, 128, 2, 2) and not sigma.any()
        assert torch.equal(model(sharp, blurry), model.adapt(sharp, code))
        assert torch.equal(model.transfer(target, sharp, blurry), model.adapt(target, code))


def test_a_plain_and_a_dataparallel_file_load_strictly_through_deblurstack_checkpoint(tmp_path):
    # a small network with the official key pattern; the full key list is checked above
    model = KernelWizard(**{**SMALL_VAE, "use_vae": False})
    weights = official_weights(_shapes(model))
    save_atomic(weights, tmp_path / "GOPRO_woVAE.pth")  # the released format: a plain state dict, no prefix
    save_atomic({f"module.{k}": v for k, v in weights.items()}, tmp_path / "dataparallel.pth")
    for name in ("GOPRO_woVAE.pth", "dataparallel.pth"):
        model = KernelWizard(**{**SMALL_VAE, "use_vae": False})
        load_weights(model, tmp_path / name)  # strict
        state = model.state_dict()
        assert state.keys() == weights.keys() and all(torch.equal(state[k], weights[k]) for k in weights)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda m: m.kernel(torch.rand(1, 3, 256, 200), torch.rand(1, 3, 256, 200)), "got 1 x 3 x 256 x 200"),
        (lambda m: m.kernel(torch.rand(1, 3, 128, 256), torch.rand(1, 3, 128, 256)), "at least 256, got 1 x 3 x 128"),
        (lambda m: m.kernel(torch.rand(1, 3, 256, 256), torch.rand(1, 3, 256, 512)), "1 x 3 x 256 x 512) and sharp"),
        (lambda m: m.adapt(torch.rand(1, 3, 100, 128), torch.zeros(1, 128, 1, 1)), "got 1 x 3 x 100 x 128"),
        (lambda m: m.adapt(torch.rand(2, 3, 256, 256), torch.zeros(1, 128, 2, 2)), "needs a 2 x 128 x 2 x 2 kernel"),
        (
            lambda m: m.transfer(torch.rand(1, 3, 256, 256), torch.rand(1, 3, 384, 256), torch.rand(1, 3, 384, 256)),
            "known_sharp (1 x 3 x 384 x 256) and sharp (1 x 3 x 256 x 256) differ",
        ),
    ],
)
def test_sizes_that_do_not_fit_raise_a_value_error_naming_them(call, message):
    model = KernelWizard(**SMALL_VAE)
    with pytest.raises(ValueError, match="KernelWizard") as error:
        call(model)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_vae_variant_matches_the_official_split_and_samples_from_its_own_generator(reference):
    model = KernelWizard(**SMALL_VAE).eval()
    model.load_state_dict(official_weights(_shapes(model)), strict=True)  # same order and shapes as the official
    sharp, blurry, target = (_image(reference[f"{name}_u8"]) for name in ("sharp", "blurry", "target"))
    with torch.no_grad():
        mean, sigma = model.encode(sharp, blurry)
        adapted = model.adapt(target, mean + 0.5 * sigma)
        code = model.kernel(sharp, blurry)
    assert _relative(mean, reference["vae_mean"]) <= 1e-5 and _relative(sigma, reference["vae_sigma"]) <= 1e-5
    assert _relative(adapted[..., ::3, ::3], reference["vae_adapted_subset"]) <= 1e-5
    noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(code, mean + sigma * noise)
