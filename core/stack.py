"""The Stack: ``[translator] -> priors -> backbone``, plus its weighted losses.

::

    blurry --> translator --> x --> priors(x, aux) --> backbone(cat[x, prior channels], guidance)
                                                                |
                                          losses(outputs, target) <-- scales, coarse to fine

Build one from YAML with :func:`deblurstack.build_stack`; the constructor takes built modules.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from deblurstack.contracts import PriorOutput

STATE_PREFIXES = ("translator.", "priors.", "backbone.", "losses.")


@dataclass
class StackOutput:
    """Everything one forward pass produced.

    Attributes:
        image: the final full-resolution output.
        scales: every backbone output, coarse to fine (``scales[-1] is image``).
        translated: what the priors and the backbone saw (the translator's output, or the input).
        priors: one output per prior, in stack order.
    """

    image: Tensor
    scales: list[Tensor]
    translated: Tensor
    priors: list[PriorOutput]


class WeightedLoss(nn.Module):
    """A loss with its weight, and what it is given: the final image or every scale, plus aux inputs."""

    def __init__(self, loss: nn.Module, weight: float = 1.0, multiscale: bool = False, requires: Sequence[str] = ()):
        super().__init__()
        self.loss = loss
        self.weight = float(weight)
        self.multiscale = multiscale
        self.requires = tuple(requires)

    def forward(self, output: StackOutput, batch: Mapping[str, Any]) -> Tensor:
        prediction = output.scales if self.multiscale else output.image
        aux = {name: batch[name] for name in self.requires}
        return self.weight * self.loss(prediction, batch["target"], **aux)


class Stack(nn.Module):
    """A deblurring pipeline assembled from components.

    Args:
        backbone: maps ``cat[image, prior channels]`` to the sharp image (or a list of scales).
        priors: applied in order to the (translated) image; their channels are concatenated.
        translator: optional, applied first.
        losses: named weighted losses used by :meth:`compute_loss`.
        frozen: submodule names (``"backbone"``, ``"translator"``, ``"priors.0"``) whose
            parameters are not trained and that stay in eval mode.
        keep_input_low_frequencies: the sigma (pixels) of a Gaussian low-pass below which every output keeps
            the (translated) input's frequencies: ``output - lowpass(output - input)``. Blur kernels sum to one
            and barely change what lies far below their size, so the sharp image has those frequencies
            already; what the constraint forbids is a shift of colour or brightness, the way a small model
            fails on photos unlike its training ones. Unset: off.
    """

    def __init__(
        self,
        backbone: nn.Module,
        priors: Sequence[nn.Module] = (),
        translator: nn.Module | None = None,
        losses: Mapping[str, WeightedLoss] | None = None,
        frozen: Iterable[str] = (),
        keep_input_low_frequencies: float | None = None,
    ) -> None:
        super().__init__()
        if keep_input_low_frequencies is not None and not keep_input_low_frequencies >= 1:
            raise ValueError(
                f"keep_input_low_frequencies: a sigma of at least 1 pixel, not {keep_input_low_frequencies}"
            )
        self.keep_input_low_frequencies = keep_input_low_frequencies
        self.translator = translator
        self.priors = nn.ModuleList(priors)
        self.backbone = backbone
        self.losses = nn.ModuleDict(losses or {})
        self.frozen = tuple(frozen)
        for name in self.frozen:
            self.get_submodule(name).requires_grad_(False)
        self.train()

    def remap_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Accept a flat file from an official monolithic model (no ``backbone.``/``priors.`` prefixes), and a
        checkpoint with weights that a module now keeps out of the state dict.

        Each prior that defines ``claim_state_dict(state) -> {file key: its own key}`` takes its
        weights (SAM-Deblur's ``pre_seg`` convolutions, BladeNet's ``maskNet``), and converts them
        with ``convert_claimed(own_state) -> own_state`` if it defines that (BGR to RGB, say); the
        backbone gets the rest, through its own ``remap_state_dict`` if it has one.
        """
        if any(key.startswith(STATE_PREFIXES) for key in state):
            # weights a module keeps out of the state dict (VGG16Perceptual's constants, read from a file), which
            # older checkpoints carry
            saved = self.state_dict()
            hidden = {k for k, _ in [*self.named_parameters(), *self.named_buffers()] if k not in saved}
            return {k: v for k, v in state.items() if k not in hidden}
        remaining, mapped = dict(state), {}
        for index, prior in enumerate(self.priors):
            claims = getattr(prior, "claim_state_dict", None)
            own = {
                own_key: remaining.pop(file_key) for file_key, own_key in (claims(remaining) if claims else {}).items()
            }
            convert = getattr(prior, "convert_claimed", None)
            for own_key, value in (convert(own) if convert and own else own).items():
                mapped[f"priors.{index}.{own_key}"] = value
        remap = getattr(self.backbone, "remap_state_dict", None)
        for key, value in (remap(remaining) if callable(remap) else remaining).items():
            mapped[f"backbone.{key}"] = value
        return mapped

    def train(self, mode: bool = True) -> Stack:
        super().train(mode)
        for name in self.frozen:
            self.get_submodule(name).eval()
        return self

    def forward(self, image: Tensor, **aux: Tensor) -> Tensor:
        """The deblurred image for ``image`` (``B x 3 x H x W``) and the auxiliary inputs priors need."""
        return self.run(image, aux).image

    def run(self, image: Tensor, aux: Mapping[str, Tensor] | None = None) -> StackOutput:
        """One pass, keeping every intermediate result that losses may need."""
        aux = aux or {}
        translated = image
        if self.translator is not None:
            translated = _last(self.translator(image))
        prior_outputs = [prior(translated, aux) for prior in self.priors]
        channels = [out.channels for out in prior_outputs if out.channels is not None]
        backbone_input = torch.cat([translated, *channels], dim=1) if channels else translated
        guidance = _merge_guidance(prior_outputs)
        unknown = set(guidance) - set(getattr(self.backbone, "insertion_points", {}) or {})
        if unknown:
            raise ValueError(
                f"guidance for {sorted(unknown)}, which the backbone does not offer "
                f"(insertion points: {sorted(getattr(self.backbone, 'insertion_points', {}) or {})})"
            )
        result = self.backbone(backbone_input, guidance=guidance) if guidance else self.backbone(backbone_input)
        scales = list(result) if isinstance(result, (list, tuple)) else [result]
        if self.keep_input_low_frequencies:
            scales = [_keep_low_frequencies(scale, translated, self.keep_input_low_frequencies) for scale in scales]
        return StackOutput(image=scales[-1], scales=scales, translated=translated, priors=prior_outputs)

    def compute_loss(
        self, output: StackOutput, batch: Mapping[str, Any], *, stack_losses: bool = True, prior_losses: bool = True
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The total weighted loss and its terms (``{"l1": ..., "priors.0.ce": ...}``).

        ``stack_losses``/``prior_losses`` leave out the stack's losses or the priors' auxiliary ones (a phase
        of BladeNet's training minimises only L1 on data without blur masks).
        """
        terms = {name: loss(output, batch) for name, loss in self.losses.items()} if stack_losses else {}
        priors = zip(self.priors, output.priors, strict=True) if prior_losses else ()
        for index, (prior, prior_output) in enumerate(priors):
            aux_losses = getattr(prior, "aux_losses", None)
            for name, value in (aux_losses(prior_output, batch) if aux_losses else {}).items():
                terms[f"priors.{index}.{name}"] = value
        if not terms:
            raise RuntimeError("no loss terms: add losses under stack.losses (or let the priors' losses count)")
        return sum(terms.values()), terms


def _last(result: Tensor | Sequence[Tensor]) -> Tensor:
    return result[-1] if isinstance(result, (list, tuple)) else result


def _keep_low_frequencies(output: Tensor, image: Tensor, sigma: float) -> Tensor:
    """``output`` with the low frequencies of ``image`` (resized to it): ``output - lowpass(output - image)``,
    the Gaussian's sigma shrunk with the scale of a multi-scale output, to no less than one pixel (a narrower
    Gaussian is nearly a delta: that scale would return its input)."""
    if image.shape[-2:] != output.shape[-2:]:
        sigma = max(1.0, sigma * output.shape[-1] / image.shape[-1])
        image = F.interpolate(image, size=output.shape[-2:], mode="area")
    return output - _gaussian_lowpass(output - image[:, : output.shape[1]], sigma)


def _gaussian_lowpass(image: Tensor, sigma: float) -> Tensor:
    """``image`` (``B x C x H x W``) blurred by a Gaussian of ``sigma`` pixels (truncated at 3 sigma), separably,
    with reflected borders (reflected again where the image is narrower than the kernel's radius)."""
    radius = max(1, int(3 * sigma))
    taps = torch.arange(-radius, radius + 1, device=image.device, dtype=torch.float32)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = (kernel / kernel.sum()).to(image.dtype)
    channels = image.shape[1]
    padded = image.index_select(-2, _reflected(image.shape[-2], radius, image.device))
    padded = padded.index_select(-1, _reflected(image.shape[-1], radius, image.device))
    rows = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(rows, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _reflected(size: int, radius: int, device: torch.device) -> Tensor:
    """Indices of ``size`` positions padded by ``radius`` on each side by reflection (``F.pad``'s ``reflect``, which
    needs ``radius < size``), folded as often as it takes for any size: one graph for export, no size branches."""
    period = 2 * (size - 1) if size > 1 else 1
    index = torch.arange(-radius, size + radius, device=device)
    index = index.remainder(torch.full_like(index, period))  # a tensor divisor: ONNX cannot take a symbolic scalar
    return (size - 1) - ((size - 1) - index).abs()


def _merge_guidance(outputs: Sequence[PriorOutput]) -> dict[str, Callable[[Tensor], Tensor]]:
    guidance: dict[str, Callable[[Tensor], Tensor]] = {}
    for output in outputs:
        for point, apply in output.guidance.items():
            guidance[point] = _chain(guidance[point], apply) if point in guidance else apply
    return guidance


def _chain(first: Callable[[Tensor], Tensor], second: Callable[[Tensor], Tensor]) -> Callable[[Tensor], Tensor]:
    return lambda features: second(first(features))


__all__ = [
    "Stack",
    "StackOutput",
    "WeightedLoss",
]
