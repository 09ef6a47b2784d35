"""Blur-guided Spatial Attention (BSA): decoder features weighted by a learnt map of where the blur is.

At each chosen insertion point of the backbone the feature map ``F`` (``C`` channels) is refined and
weighted, as the official ``SAUp`` block does between its upsampling and its channel-reducing DoubleConv::

    F1 = DoubleConv(C -> C)(F);   A = sigmoid(Conv7x7(C -> 1)(F1));   F -> F1 * A

(no channel pooling: this is not CBAM's spatial attention). The maps, coarse to fine, are fused as
``S = A3 + up(A2 + up(A1))`` (bilinear, align_corners) and ``S`` is trained against the blur mask with
the official Dice loss ``1 - sum(S * M) / sum(S + M)`` (no factor 2, no epsilon, ``S`` in [0, 3], weight
0.01; ``dice: standard`` uses ``1 - 2 sum(S M) / (sum S + sum M)``). ``S`` itself is not used at inference.

Official files: the ``deblurNet.up2/up3/up4.{conv1,sa1}.*`` keys of a ``WholeNet`` state dict (the SAUp
blocks at strides 4, 2 and 1) are claimed by :meth:`BlurAttention.claim_state_dict`; the blocks' other
DoubleConv (``deChannelConv``) is the backbone's own ``conv``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from functools import partial
from typing import Annotated, Any, Literal

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_nn
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from deblurstack import ConfigError, Prior, PriorOutput, folded_conv3x3, inference_fast_path

#: the official SAUp blocks by the insertion point they sit at in ``unet.bladenet``
OFFICIAL_BLOCKS = {"deblurNet.up2.": "decoder_s4", "deblurNet.up3.": "decoder_s2", "deblurNet.up4.": "decoder_s1"}


class SpatialAttention(nn.Module):
    """``sigmoid(conv7x7(x))``: one attention value per pixel from all ``channels``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 1, kernel_size=7, padding=3)

    def forward(self, features: Tensor) -> Tensor:
        if not inference_fast_path(self):
            return self.conv1(features).sigmoid()
        # oneDNN runs a convolution to one channel far below its rate (about 13 GFLOP/s here): compute the 49 taps'
        # channel sums as one 1x1 convolution (a GEMM), then add the 49 shifted planes (benchmarks/README.md)
        size = self.conv1.kernel_size[0]
        taps = F.conv2d(features, self.conv1.weight.permute(2, 3, 0, 1).reshape(size * size, -1, 1, 1))
        taps = F.pad(taps, [size // 2] * 4)
        height, width = features.shape[-2:]
        total = taps[:, 0:1, :height, :width] + self.conv1.bias.to(taps.dtype).view(1, 1, 1, 1)
        for tap in range(1, size * size):
            row, column = divmod(tap, size)
            total.add_(taps[:, tap : tap + 1, row : row + height, column : column + width])
        return total.sigmoid_()


class AttentionBlock(nn.Module):
    """The attention part of an official SAUp block: refine (DoubleConv C -> C), then weight by the map."""

    def __init__(self, channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(2):  # (conv3x3 -> BN -> ReLU) x 2, the official DoubleConv's indices
            layers += [
                nn.Conv2d(channels, channels, 3, padding=1),
                nn.BatchNorm2d(channels) if batch_norm else nn.Identity(),
            ]
            layers.append(nn.ReLU(inplace=True))
        self.conv1 = nn.Module()
        self.conv1.double_conv = nn.Sequential(*layers)
        self.sa1 = SpatialAttention(channels)

    def forward(self, features: Tensor, maps: list[Tensor]) -> Tensor:
        if inference_fast_path(self):  # BatchNorm folded into the convolutions
            layers = self.conv1.double_conv
            refined = features
            for conv, norm in ((layers[0], layers[1]), (layers[3], layers[4])):
                refined = folded_conv3x3(refined, conv, norm).relu_()
        else:
            refined = self.conv1.double_conv(features)
        attention = self.sa1(refined)
        maps.append(attention)
        return refined * attention


class BlurAttention(Prior):
    """Spatial attention at backbone insertion points, supervised by the blur mask through their fused map.

    Args:
        insertion_points: the backbone's points (name -> channels); set by the builder.
        points: where to act (``unet``: ``decoder_s4``, ``decoder_s2``, ``decoder_s1`` as BladeNet;
            ``nafnet``: its ``decoder_*`` points).
        norm: ``batch`` (official) or ``none`` for the refining DoubleConv.
        weight: weight of the Dice loss against ``blur_mask`` in training (official: 0.01); 0 leaves it out.
        dice: ``official`` (no factor 2, no epsilon) or ``standard`` (``2 |S M| / (|S| + |M|)``).
    """

    out_channels = 0

    def __init__(
        self,
        insertion_points: Mapping[str, int],
        points: tuple[str, ...] = ("decoder_s4", "decoder_s2", "decoder_s1"),
        norm: Literal["batch", "none"] = "batch",
        weight: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.01,
        dice: Literal["official", "standard"] = "official",
    ) -> None:
        super().__init__()
        missing = [point for point in points if point not in insertion_points]
        if missing or not points:
            raise ConfigError(
                f"points: the backbone offers no {', '.join(missing) or 'point: name at least one'} "
                f"(its insertion points: {', '.join(insertion_points) or 'none'})"
            )
        self.blocks = nn.ModuleDict({p: AttentionBlock(insertion_points[p], norm == "batch") for p in points})
        self.weight, self.dice = weight, dice

    def forward(self, image: Tensor, aux: Mapping[str, Tensor]) -> PriorOutput:
        maps: list[Tensor] = []  # filled by the backbone's forward, at each point it passes
        guidance = {point: partial(block, maps=maps) for point, block in self.blocks.items()}
        return PriorOutput(guidance=guidance, extras={"maps": maps, "size": tuple(image.shape[-2:])})

    def aux_losses(self, output: PriorOutput, batch: Mapping[str, Any]) -> dict[str, Tensor]:
        if not self.weight:
            return {}
        mask = batch["blur_mask"]
        attention = attention_sum(output.extras["maps"], output.extras["size"])
        return {"dice": self.weight * dice_loss(attention, mask.reshape(attention.shape), self.dice)}

    def claim_state_dict(self, state: Mapping[str, Tensor]) -> dict[str, str]:
        """The official SAUp blocks' ``conv1`` and ``sa1`` keys, at the points this prior acts on."""
        claims = {}
        for prefix, point in OFFICIAL_BLOCKS.items():
            if point in self.blocks:
                for part in ("conv1.", "sa1."):
                    claims |= {
                        k: f"blocks.{point}.{k.removeprefix(prefix)}" for k in state if k.startswith(prefix + part)
                    }
        return claims


def attention_sum(maps: list[Tensor], size: tuple[int, int]) -> Tensor:
    """The official fusion ``S = A3 + up(A2 + up(A1))`` of maps at successive scales, cropped to ``size``.

    Each coarser sum is upsampled (bilinear, align_corners) to the next map's size. Backbones pad their
    input on the right and bottom, so the image is the top-left corner of the finest map; a map at
    stride ``s > 1`` is cropped to the image's extent there and upsampled to ``size``.
    """
    if not maps:
        raise RuntimeError("no attention maps: the backbone did not pass any of the bsa points")
    ordered = sorted(maps, key=lambda m: m.shape[-1])
    total = ordered[0]
    for finer in ordered[1:]:
        total = finer + F.interpolate(total, size=finer.shape[-2:], mode="bilinear", align_corners=True)
    height, width = size
    stride = 2 ** max(0, math.ceil(math.log2(height / total.shape[-2]) - 1e-9))  # exact for images >= the pad
    total = total[..., : math.ceil(height / stride), : math.ceil(width / stride)]
    if stride > 1:
        total = F.interpolate(total, size=size, mode="bilinear", align_corners=False)
    return total


def dice_loss(attention: Tensor, mask: Tensor, form: Literal["official", "standard"] = "official") -> Tensor:
    """BladeNet's Dice loss over the whole batch: ``1 - sum(S M) / sum(S + M)``; ``standard``: with the factor 2.

    The sums run over the batch, so the loss does not split into per-sample terms: under torchrun the sums are
    added over every process (with gradients), which gives exactly the loss and gradient of the whole batch
    on one process (the official code's DataParallel computes it on the gathered batch).
    """
    sums = torch.stack([(attention * mask).sum(), (attention + mask).sum()])
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        sums = dist_nn.all_reduce(sums)
    overlap, total = sums
    return 1 - (2 * overlap if form == "standard" else overlap) / total


__all__ = ["BlurAttention", "attention_sum", "dice_loss"]
