"""Known-blur generation: the discriminator's "real" images, with the known blur but the unknown domain's content.

Blur2Blur's point (§3 of the paper, ``set_input`` of ``models/blur2blur_model.py``): the known domain's own blurry
images differ from the unknown camera's in colour, noise and resolution, so a discriminator trained on them teaches
the translator to change those instead of the blur. Three generators, chosen by ``train.known_blur.type``:

- ``kernel_wizard``: the official one: a frozen KernelWizard encodes the blur of a known pair (``known_sharp``,
  ``known_blur``) and applies it to the unknown domain's sharp image (``sharp``), without gradients;
- ``synthesizer``: any registered single-image synthesizer (motion_blur, defocus, lbs, ...) applied to ``sharp``:
  weight-free;
- ``known_images``: ``known_blur`` as it is, the baseline the paper argues against.

A generator that draws random numbers draws them from the entropy the trainer gives it (run seed, step) and each
sample's position in the step's global batch, so a resumed run makes the same images without any saved state, and
so do two processes with half the batch each.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from torch import Tensor, nn

from deblurstack import ExistingFile, load_state, read_state_dict
from deblurstack.compose import ComponentNode, resolve_node
from deblurstack.plugins.blur2blur.kernel_wizard import KernelWizard, KernelWizardOptions


class KnownBlur(nn.Module):
    """``forward(batch, entropy, positions) -> images``: the real images for a batch (``positions``: each sample's
    place in the step's global batch); ``needs`` names the batch keys it reads."""

    needs: tuple[str, ...] = ()

    def forward(self, batch: Mapping[str, Any], entropy: Sequence[int], positions: Sequence[int]) -> Tensor:
        raise NotImplementedError


class SynthesizedBlur(KnownBlur):
    """A synthesizer run on each unknown-domain sharp image, with ``numpy.random.default_rng([*entropy, position])``."""

    needs = ("sharp",)

    def __init__(self, synthesizer: Any, name: str) -> None:
        super().__init__()
        self.synthesizer, self.name = synthesizer, name

    def forward(self, batch: Mapping[str, Any], entropy: Sequence[int], positions: Sequence[int]) -> Tensor:
        sharp = batch["sharp"]
        made = []
        for position, image in zip(positions, sharp.permute(0, 2, 3, 1).cpu().numpy(), strict=True):
            blurry = np.asarray(self.synthesizer([image], np.random.default_rng([*entropy, position]))["input"])
            if blurry.shape != image.shape:
                raise ValueError(f"synthesizer {self.name!r} made a {blurry.shape} image from a {image.shape} one")
            made.append(torch.from_numpy(np.ascontiguousarray(blurry, dtype=np.float32)))
        return torch.stack(made).permute(0, 3, 1, 2).to(sharp.device)


class TransferredBlur(KnownBlur):
    """KernelWizard's transfer of a known pair's blur onto the unknown domain's sharp image, frozen, no gradients."""

    needs = ("sharp", "known_sharp", "known_blur")

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network.requires_grad_(False).eval()

    def train(self, mode: bool = True) -> TransferredBlur:
        return super().train(False)  # frozen: always in eval mode

    @torch.no_grad()
    def forward(self, batch: Mapping[str, Any], entropy: Sequence[int], positions: Sequence[int]) -> Tensor:
        return self.network.transfer(batch["sharp"], batch["known_sharp"], batch["known_blur"])


class KnownImages(KnownBlur):
    """The known domain's blurry images as they are."""

    needs = ("known_blur",)

    def forward(self, batch: Mapping[str, Any], entropy: Sequence[int], positions: Sequence[int]) -> Tensor:
        return batch["known_blur"]


class _Choice(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _one_frame(node: dict[str, Any]) -> dict[str, Any]:
    resolved = resolve_node("synthesizer", node)
    if (count := resolved.record.frame_count(resolved.params)) != 1:
        raise ValueError(f"synthesizer {resolved.type!r} makes a pair from {count} frames, not from one sharp image")
    return node


class Synthesizer(_Choice):
    """``{type: synthesizer, synthesizer: {type: motion_blur, ...}}``: a registered synthesizer that makes a pair
    from one sharp image."""

    type: Literal["synthesizer"]
    synthesizer: Annotated[ComponentNode("synthesizer"), AfterValidator(_one_frame)] = {"type": "motion_blur"}

    def build(self) -> KnownBlur:
        resolved = resolve_node("synthesizer", self.synthesizer, "train.known_blur.synthesizer")
        return SynthesizedBlur(resolved.build(), resolved.type)


class KernelWizardTransfer(_Choice):
    """``{type: kernel_wizard, weights: GOPRO_woVAE.pth}``: the official generation; ``weights`` unset builds a random
    KernelWizard (for tests: its images are not blurry). ``weights`` may also be a checkpoint of the
    ``kernel_wizard`` trainer (its EMA weights where it has them, as ``test`` scores a run); ``network`` is then the
    shape it trained (its ``train.network``)."""

    type: Literal["kernel_wizard"]
    weights: ExistingFile | None = None
    network: KernelWizardOptions = {}

    def build(self) -> KnownBlur:
        network = KernelWizard(**self.network)
        if self.weights is None:
            warnings.warn("train.known_blur.weights is unset: a random KernelWizard makes no real blur", stacklevel=2)
        else:
            # a run's checkpoint: its EMA first (what picked best.pth); GOPRO_woVAE.pth is a plain state dict
            state = read_state_dict(self.weights, candidates=("params_ema", "params"))
            load_state(network, state, source=str(self.weights))
        return TransferredBlur(network)


class Known(_Choice):
    """``{type: known_images}``: the known blurry images (``known_blur``) themselves."""

    type: Literal["known_images"]

    def build(self) -> KnownBlur:
        return KnownImages()


#: the ``train.known_blur`` node
KnownBlurNode = Annotated[Synthesizer | KernelWizardTransfer | Known, Field(discriminator="type")]


__all__ = ["KnownBlur", "KnownBlurNode", "KnownImages", "SynthesizedBlur", "TransferredBlur"]
