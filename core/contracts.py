"""What a built component must do: small base classes for backbones, priors, translators, discriminators, losses.

Tensors are ``B x C x H x W`` float images in [0, 1] (RGB, ``C = 3`` for images). The stack
runs ``translator -> priors -> backbone`` and never pads: every backbone takes any ``H x W``
(it pads to its ``pad_multiple`` internally and crops back). Subclassing is optional; the
builder and ``deblurstack.testing`` only rely on the attributes and signatures below.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from deblurstack.records import IMAGE_CHANNELS

#: insertion point name -> function applied to the feature map there (same shape in and out).
Guidance = Mapping[str, Callable[[Tensor], Tensor]]


class Backbone(nn.Module):
    """Maps ``B x in_channels x H x W`` to a ``B x 3 x H x W`` image (or a coarse-to-fine list of them).

    Contract:
        * a factory that accepts extra channels takes ``in_channels`` (default 3); channels past
          the first three come from priors, and the global residual adds only the image channels
          (``output = f(x) + x[:, :3]``, as SAM-Deblur's NAFNet does);
        * ``pad_multiple``: the factor ``H`` and ``W`` are padded to inside ``forward``;
        * ``insertion_points``: ``{name: channels}`` of feature maps where ``guidance`` may act;
          call :meth:`guide` there;
        * ``residual``: True (the default) when the output is ``f(x) + x[:, :3]``
          (:func:`image_residual`); a network that predicts the sharp image directly (BladeNet's
          sigmoid U-Net) sets it False. ``deblurstack.testing`` checks whichever it says.
    """

    pad_multiple: int = 1
    residual: bool = True

    def __init__(self) -> None:
        super().__init__()
        self.insertion_points: dict[str, int] = {}

    def forward(self, image: Tensor, guidance: Guidance | None = None) -> Tensor | list[Tensor]:
        raise NotImplementedError

    @staticmethod
    def guide(point: str, features: Tensor, guidance: Guidance | None) -> Tensor:
        """Apply the guidance registered for ``point``, if any."""
        apply = guidance.get(point) if guidance else None
        return features if apply is None else apply(features)


@dataclass
class PriorOutput:
    """What a prior gives the stack.

    Attributes:
        channels: ``B x out_channels x H x W`` appended to the image before the backbone, or None.
        guidance: functions for backbone insertion points (see :class:`Backbone`).
        extras: anything the prior's auxiliary losses need later (logits, attention maps).
    """

    channels: Tensor | None = None
    guidance: dict[str, Callable[[Tensor], Tensor]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)


class Prior(nn.Module):
    """Derives structure from the (translated) blurry image and the auxiliary inputs it requires.

    Contract:
        * ``out_channels``: the number of channels in ``PriorOutput.channels`` (0 for none);
        * ``forward(image, aux)`` where ``aux`` holds the batch's auxiliary inputs, at least those
          named in the record's ``requires`` (e.g. ``aux["masks"]``: an integer label map ``B x H x W``);
        * a guidance prior's factory takes ``insertion_points`` (name -> channels of the backbone);
        * :meth:`aux_losses` returns extra weighted loss terms (e.g. LBP's cross-entropy).
    """

    out_channels: int = 0

    def forward(self, image: Tensor, aux: Mapping[str, Tensor]) -> PriorOutput:
        raise NotImplementedError

    def aux_losses(self, output: PriorOutput, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        """Weighted auxiliary loss terms for this output; none by default."""
        return {}


class Translator(nn.Module):
    """Maps an image with unknown blur to the blur domain the backbone was trained on.

    ``forward(image)`` returns an image of the same shape (or a coarse-to-fine list whose last
    element is full size). A translator may be trained while the backbone is frozen.
    """

    def forward(self, image: Tensor) -> Tensor | list[Tensor]:
        raise NotImplementedError


class Discriminator(nn.Module):
    """Judges images for an adversarial trainer: ``forward(images) -> logits``, one patch-logit map per image.

    ``images`` is a coarse-to-fine list of ``scales`` images (a translator's outputs, or the real images
    downsampled alike); a multi-scale discriminator applies its weights to each (Blur2Blur's PatchGAN at 1/4,
    1/2, 1). ``scales`` says how many it judges; trainers check it against the translator's.
    """

    scales: int = 1

    def forward(self, images: list[Tensor]) -> list[Tensor]:
        raise NotImplementedError


class Loss(nn.Module):
    """``forward(prediction, target, **aux) -> scalar``; lower is better.

    ``prediction`` is the final image, or the list of every backbone output (coarse to fine)
    when the record says ``multiscale=True``. ``aux`` holds the inputs the record ``requires``.
    """

    def forward(self, prediction: Tensor | list[Tensor], target: Tensor, **aux: Tensor) -> Tensor:
        raise NotImplementedError


class Metric(nn.Module):
    """Per-image quality of ``output`` against ``target``.

    ``forward(output, target, **aux)`` takes ``B x 3 x H x W`` float images in [0, 1] (``aux``
    holds the inputs the record ``requires``, e.g. ``input`` for MCR) and returns a ``B`` tensor,
    or a mapping of named ``B`` tensors when one computation gives several numbers. ``protocol``
    states in one line exactly how the number is computed; it is printed with every result.
    """

    protocol: str = ""

    def forward(self, output: Tensor, target: Tensor, **aux: Tensor) -> Tensor | dict[str, Tensor]:
        raise NotImplementedError


class MaskSource:
    """Computes an auxiliary map (a segmentation, say) for one whole image, before any crop.

    ``__call__(image, pair)`` receives the ``H x W x 3`` float32 RGB image in [0, 1] and the
    :class:`~deblurstack.data.Pair` of its files (for sources that read maps from disk, and for
    messages); it returns an ``H x W`` array: an integer label map for ``masks`` (whose level sets
    are the segments), or a float map in [0, 1]. The dataset crops and flips it with the image.
    Caching and pre-deblurring are options of the YAML node, handled by the builder.
    """

    def __call__(self, image: np.ndarray, pair: Any) -> np.ndarray:
        raise NotImplementedError


class Synthesizer:
    """Makes one blurry/sharp pair from sharp frames.

    ``__call__(frames, rng)`` receives ``frames``, a list of ``H x W x 3`` float32 RGB arrays in
    [0, 1] (one frame, or as many consecutive frames as the record's ``frames`` says), and a
    ``numpy.random.Generator``; it returns ``{"input": blurry, "target": sharp}`` of the same
    layout, plus any auxiliary outputs the record ``provides`` (``H x W`` arrays).
    """

    def __call__(self, frames: list[np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
        raise NotImplementedError


class Stochastic:
    """Mixin for a component that draws random numbers in training (mask dropout, noise, blur made on the fly).

    Draw from :attr:`generator`, never from torch's global generator: ``torch.rand(..., generator=self.generator)``.
    It is a CPU generator, so draw on the CPU and move the result (the draws are then the same on every device).
    Trainers seed the generator of every such module in the stack from the run's seed, the process rank and the
    module's name in the stack, and save and restore its state with every checkpoint
    (``deblurstack.engine.checkpoints.seed_generators``, ``rng_state``, ``restore_rng_state``), so a resumed run
    draws exactly what an uninterrupted one would, whatever else draws from the global generator.

    Example::

        import torch
        from deblurstack import Prior, PriorOutput, Stochastic

        class NoisyLuma(Stochastic, Prior):
            out_channels = 1

            def forward(self, image, aux):
                luma = image.mean(1, keepdim=True)
                if self.training:
                    noise = torch.randn(luma.shape, generator=self.generator).to(luma.device)
                    luma = luma + 0.01 * noise
                return PriorOutput(channels=luma)
    """

    @property
    def generator(self) -> torch.Generator:
        """This module's own CPU generator (seeded with 0 until a trainer seeds it)."""
        generator = self.__dict__.get("_generator")
        if generator is None:  # created on first use: a mixin has no __init__ of its own to chain
            generator = self.__dict__["_generator"] = torch.Generator().manual_seed(0)
        return generator


def pad_to_multiple(image: Tensor, multiple: int, mode: str = "constant") -> Tensor:
    """Pad ``image`` on the right and bottom so that H and W are multiples of ``multiple``.

    ``mode="constant"`` pads zeros (as NAFNet does); ``"reflect"`` as Restormer's test script.
    Crop back with ``output[..., :height, :width]``.
    """
    height, width = image.shape[-2:]
    pad_h, pad_w = -height % multiple, -width % multiple
    if torch.compiler.is_compiling():  # export/compile: one graph for every size, no shape branches
        return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)
    if pad_h == 0 and pad_w == 0:
        return image
    if mode == "reflect" and (pad_h >= height or pad_w >= width):
        mode = "replicate"  # reflect padding cannot exceed the image size
    return F.pad(image, (0, pad_w, 0, pad_h), mode=mode)


def inference_fast_path(module: nn.Module) -> bool:
    """Whether ``module`` may run an inference-only formulation of its maths.

    True in eval mode without autograd, outside tracing, export and compilation: there a backbone
    may change memory layouts, fold parameters or fuse operations, as long as the result equals
    its plain formulation (which training, gradients, export and compilation keep).
    """
    return not (
        module.training
        or torch.is_grad_enabled()
        or torch.jit.is_tracing()
        or torch.compiler.is_compiling()
        or _fx_symbolic_tracing()
    )


def folded_batch_norm(conv: nn.Conv2d, norm: nn.Module) -> tuple[Tensor, Tensor | None]:
    """Weight and bias of ``norm(conv(x))`` as one convolution with ``conv``'s other settings, from ``norm``'s
    running statistics (a fast path's BatchNorm folding); an ``nn.Identity`` norm leaves the convolution as it is.

    Example::

        import torch.nn.functional as F
        from deblurstack import folded_batch_norm, inference_fast_path

        def forward(self, x):  # self.conv: a 3x3 nn.Conv2d with padding 1, self.norm: its nn.BatchNorm2d
            if inference_fast_path(self):
                return F.conv2d(x, *folded_batch_norm(self.conv, self.norm), padding=1).relu_()
            return self.norm(self.conv(x)).relu()
    """
    if isinstance(norm, nn.Identity):
        return conv.weight, conv.bias
    if not isinstance(norm, (nn.BatchNorm2d, nn.SyncBatchNorm)) or norm.running_var is None:
        raise TypeError(f"folded_batch_norm folds a BatchNorm2d with running statistics, not {norm!r}")
    scale = torch.rsqrt(norm.running_var + norm.eps)
    if norm.weight is not None:
        scale = scale * norm.weight
    bias = -norm.running_mean if conv.bias is None else conv.bias - norm.running_mean
    bias = bias * scale if norm.bias is None else bias * scale + norm.bias
    return conv.weight * scale.view(-1, 1, 1, 1), bias


def folded_conv3x3(x: Tensor, conv: nn.Conv2d, norm: nn.Module | None = None) -> Tensor:
    """``norm(conv(x))`` for a 3x3 ``conv`` with stride 1 and zero padding 1, in an inference fast path.

    ``norm`` (a BatchNorm2d with running statistics, or None) is folded into the convolution
    (:func:`folded_batch_norm`). On CPU the folded weights are prepared once and kept (beside ``conv``, not in
    it: nothing is saved or copied with the module) while a fingerprint of the two modules' tensors stays the
    same: their storage, shapes, dtypes, version counters, the norm's ``eps`` and a position-weighted sum of
    each tensor's values, which also moves with the changes version counters miss (a fused optimizer step, a
    collective, ``.data``, a BatchNorm's statistics).

    On CPU, in float32 or float64, where both channel counts are at least 256 and the map is at most 128x128
    with sides that are multiples of 4, it runs Winograd's minimal filtering F(4x4, 3x3) (Lavin and Gray, 2016):
    4x fewer multiplications, as 36 batched matrix products over 6x6 input tiles, equal to the direct
    convolution within float rounding (errors about 3 times the direct convolution's: 4e-5 to 5e-5 on outputs
    up to 7). oneDNN computes 3x3 convolutions directly; on fewer channels or larger maps the tile transforms
    cost as much as they save (benchmarks/README.md). Where Winograd runs, the result is channels-last. With
    autograd on it is ``norm(conv(x))`` as it is.

    Example::

        from deblurstack import folded_conv3x3, inference_fast_path

        def forward(self, x):  # self.conv: a 3x3 nn.Conv2d with padding 1, self.norm: its nn.BatchNorm2d
            if inference_fast_path(self):
                return folded_conv3x3(x, self.conv, self.norm).relu_()
            return self.norm(self.conv(x)).relu()
    """
    settings = (conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups, conv.padding_mode)
    if settings != ((3, 3), (1, 1), (1, 1), (1, 1), 1, "zeros"):
        raise TypeError(f"folded_conv3x3 takes a 3x3 convolution with stride 1 and zero padding 1, not {conv!r}")
    norm = nn.Identity() if norm is None else norm
    if torch.is_grad_enabled() or _fx_symbolic_tracing():
        return norm(conv(x))
    if x.device.type != "cpu":  # folding is cheap there: nothing kept
        return F.conv2d(x, *folded_batch_norm(conv, norm), padding=1)
    tensors = [*conv.parameters(), *conv.buffers(), *norm.parameters(), *norm.buffers()]
    layout = (
        tuple((t.data_ptr(), t.dtype, t.shape, -1 if t.is_inference() else t._version) for t in tensors),
        getattr(norm, "eps", None),
    )
    checksums = torch.stack([_checksum(t) for t in tensors if t.is_floating_point()])
    prepared = _FOLDED.get(conv)
    if prepared is None or prepared.layout != layout or not torch.equal(prepared.checksums, checksums):
        prepared = _FOLDED[conv] = _FoldedConv3x3(layout, checksums, *folded_batch_norm(conv, norm))
    return prepared(x)


def _checksum(tensor: Tensor) -> Tensor:
    """A position-weighted sum of ``tensor``'s values (fixed pseudo-random weights per row and per column of its
    matrix view): a flip, a swap or a sum-preserving edit moves it, as a plain sum would not."""
    matrix = tensor.detach().reshape(tensor.shape[0] if tensor.dim() > 1 else 1, -1)
    return (matrix @ _probe(matrix.shape[1], matrix.dtype)) @ _probe(matrix.shape[0], matrix.dtype)


@functools.cache
def _probe(length: int, dtype: torch.dtype) -> Tensor:
    return torch.rand(length, generator=torch.Generator().manual_seed(length), dtype=torch.float64).to(dtype) + 0.5


#: torch.fx symbolic tracing (``is_fx_tracing`` where torch predates ``is_fx_symbolic_tracing``, which also counts
#: torch.export: the fast paths are off there anyway)
_fx_symbolic_tracing = getattr(
    torch.fx._symbolic_trace, "is_fx_symbolic_tracing", torch.fx._symbolic_trace.is_fx_tracing
)


#: Winograd's F(4x4, 3x3) (Lavin and Gray, 2016, points 0, +-1, +-2): the input transform B^T, the filter
#: transform G and the output transform A^T, applied to 6x6 input tiles and 3x3 filters
_WINOGRAD_BT = [
    [4, 0, -5, 0, 1, 0],
    [0, -4, -4, 1, 1, 0],
    [0, 4, -4, -1, 1, 0],
    [0, -2, -1, 2, 1, 0],
    [0, 2, -1, -2, 1, 0],
    [0, 4, 0, -5, 0, 1],
]
_WINOGRAD_G = [
    [1 / 4, 0, 0],
    [-1 / 6, -1 / 6, -1 / 6],
    [-1 / 6, 1 / 6, -1 / 6],
    [1 / 24, 1 / 12, 1 / 6],
    [1 / 24, -1 / 12, 1 / 6],
    [0, 0, 1],
]
_WINOGRAD_AT = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]
#: about what the gathered 6x6 tiles of one band of tile rows take (a batch of one may take more: one row)
_WINOGRAD_BAND_BYTES = 4 << 20


@functools.cache
def _winograd_transforms(dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """B^T, G and A^T, each as M (x) M: its row 6a + b (4a + b for A^T) applies M on both sides of a flat tile."""

    def kron(matrix: list[list[float]]) -> Tensor:
        m = torch.tensor(matrix, dtype=torch.float64)
        return torch.kron(m, m).to(dtype)

    return kron(_WINOGRAD_BT), kron(_WINOGRAD_G), kron(_WINOGRAD_AT)


@dataclass
class _FoldedConv3x3:
    layout: tuple[Any, ...]  # what the weights were folded from: storage, dtypes, shapes, eps ...
    checksums: Tensor  # ... and a position-weighted sum of each tensor's values
    weight: Tensor
    bias: Tensor | None
    filters: Tensor | None = None  # G g G^T per filter, as [36, in, out] matrices; made on first Winograd use

    def __call__(self, x: Tensor) -> Tensor:
        out_channels, in_channels = self.weight.shape[:2]
        height, width = x.shape[-2:]
        if not (
            x.device.type == "cpu"
            and x.dtype in (torch.float32, torch.float64)
            and x.numel() > 0
            and min(in_channels, out_channels) >= 256
            and height <= 128
            and width <= 128
            and height % 4 == 0
            and width % 4 == 0
        ):
            return F.conv2d(x, self.weight, self.bias, padding=1)
        input_transform, filter_transform, output_transform = _winograd_transforms(x.dtype)
        if self.filters is None:  # one matrix product for all filters, viewed as [36, in, out]
            flat = self.weight.reshape(out_channels * in_channels, 9)
            self.filters = (filter_transform @ flat.T).view(36, out_channels, in_channels).transpose(1, 2)
        batch, rows, columns = x.shape[0], height // 4, width // 4
        padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)  # channels last
        step_n, step_h, step_w, step_c = padded.stride()
        out = x.new_empty(batch, rows, 4, columns, 4, out_channels)
        # bands of tile rows whose gathered tiles take about 4 MiB: they stay in cache between the transform, the
        # products and the inverse transform (faster than the whole map at once, benchmarks/README.md)
        band = max(1, _WINOGRAD_BAND_BYTES // (36 * batch * columns * in_channels * x.element_size()))
        for first in range(0, rows, band):
            count = min(band, rows - first)
            # the 6x6 input tiles at stride 4 over the zero-padded map, as [36, tiles x channels]
            tiles = padded.as_strided(
                (6, 6, batch, count, columns, in_channels),
                (step_h, step_w, step_n, 4 * step_h, 4 * step_w, step_c),
                padded.storage_offset() + 4 * first * step_h,
            ).reshape(36, -1)
            products = torch.bmm((input_transform @ tiles).view(36, -1, in_channels), self.filters)
            outputs = output_transform @ products.view(36, -1)  # each tile's 4x4 outputs
            out[:, first : first + count] = outputs.view(4, 4, batch, count, columns, -1).permute(2, 3, 0, 4, 1, 5)
        out = out.view(batch, height, width, out_channels)
        if self.bias is not None:
            out += self.bias
        return out.permute(0, 3, 1, 2)


#: the prepared weights of each convolution that ran through folded_conv3x3 (gone with the convolution)
_FOLDED: weakref.WeakKeyDictionary[nn.Module, _FoldedConv3x3] = weakref.WeakKeyDictionary()


def image_residual(output: Tensor, inputs: Tensor) -> Tensor:
    """Global residual on the image channels only: ``output + inputs[:, :output channels]``."""
    return output + inputs[:, : output.shape[1]]


__all__ = [
    "IMAGE_CHANNELS",
    "Backbone",
    "Discriminator",
    "Guidance",
    "Loss",
    "MaskSource",
    "Metric",
    "Prior",
    "PriorOutput",
    "Stochastic",
    "Synthesizer",
    "Translator",
    "folded_batch_norm",
    "folded_conv3x3",
    "image_residual",
    "inference_fast_path",
    "pad_to_multiple",
]
