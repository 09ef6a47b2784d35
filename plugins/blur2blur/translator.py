"""Blur2Blur's translator (Pham et al., CVPR 2024): a generator that turns an image with a camera's unknown blur
into one with the blur a frozen deblurrer knows.

The generator is any registered backbone (official: MIMO-UNet, ``models/networks.py::define_G`` with ``--netG
mimounet``), built through the registry, so ``generator: {type: nafnet.w32}`` swaps it from YAML. A multi-scale
generator's outputs are the translator's scales, coarse to fine (MIMO-UNet: 1/4, 1/2, 1); a single-output generator
gets the coarser scales by bilinear downsampling of its output, as the discriminator's real images get theirs.
The official ``init_net`` re-draws every convolution weight from N(0, 0.02) with zero biases (``init: normal``);
since MIMO-UNet's outputs are residuals on its inputs, the translator then starts near the identity.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field
from torch import Tensor, nn

from deblurstack import Translator
from deblurstack.compose import ComponentNode, as_node, resolve_node
from deblurstack.plugins.blur2blur.losses import downsample_pyramid


class Blur2Blur(Translator):
    """Unknown blur -> known blur, as a coarse-to-fine list of ``scales`` images (the last full size).

    Args:
        generator: a backbone node (``{type: mimo_unet.base}``, the official MIMO-UNet); any backbone that maps
            3 channels to 3.
        scales: images returned, each half the size of the next (the discriminator judges them all; official 3).
            A multi-scale generator must return exactly this many.
        init: ``normal``: the official initialisation, convolution and linear weights N(0, ``init_gain``), batch
            norm weights N(1, ``init_gain``), zero biases; ``default``: the generator's own.
        init_gain: standard deviation of the ``normal`` initialisation.
    """

    def __init__(
        self,
        generator: ComponentNode("backbone") = "mimo_unet.base",
        scales: Annotated[int, Field(ge=1, le=6)] = 3,
        init: Literal["normal", "default"] = "normal",
        init_gain: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 0.02,
    ) -> None:
        super().__init__()
        self.generator = resolve_node("backbone", as_node(generator), "generator").build()
        self.scales = scales
        if init == "normal":  # the official init_weights: convolutions and linear layers, then batch norms
            for module in self.generator.modules():
                if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    nn.init.normal_(module.weight, 0.0, init_gain)
                    if module.bias is not None:
                        nn.init.zeros_(module.bias)
                elif isinstance(module, nn.BatchNorm2d):
                    nn.init.normal_(module.weight, 1.0, init_gain)
                    nn.init.zeros_(module.bias)

    def forward(self, image: Tensor) -> list[Tensor]:
        result = self.generator(image)
        outputs = list(result) if isinstance(result, (list, tuple)) else [result]
        if len(outputs) == 1:
            return downsample_pyramid(outputs[0], self.scales)
        if len(outputs) != self.scales:
            raise ValueError(
                f"translator blur2blur: the generator returns {len(outputs)} scales but scales is {self.scales}"
            )
        return outputs

    def remap_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Accept an official ``latest_net_G.pth`` (the generator's own keys, ``module.`` already stripped)."""
        if any(key.startswith("generator.") for key in state):
            return state
        remap = getattr(self.generator, "remap_state_dict", None)
        return {f"generator.{key}": value for key, value in (remap(state) if remap else state).items()}


__all__ = ["Blur2Blur"]
