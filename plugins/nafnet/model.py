"""NAFNet and its Baseline (Chen et al., ECCV 2022), written from the official code (megvii-research/NAFNet).

Module names reproduce the official state_dict keys (``intro``, ``encoders.i.j.conv1``, ``downs``, ``ups``,
``middle_blks``, ``decoders``, ``ending``, ``norm1``, ``beta``, ``gamma``, ``sca.1``, ``se.1``), so release files
(``params``/``params_ema``) load strictly without remapping. Deliberate differences from the official code:

* ``in_channels`` may exceed 3 (prior channels); the ending conv always gives 3 channels and the global residual
  adds the first 3 input channels only, as SAM-Deblur's ``NAFNet(mask=True)`` does;
* ``LayerNorm2d`` uses plain differentiable ops (the official custom autograd Function computes the same);
* each decoder stage offers a guidance point ``decoder_s{stride}`` after the skip addition (identity by default);
* TLC (``NAFNetLocal``) is the generic ``tlc: {train_size: 256}`` option, which replaces the same pools;
* inference (eval mode without autograd) runs in channels_last with a fused layer norm, see ``inference_fast_path``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from deblurstack import Backbone, Guidance, image_residual, inference_fast_path, pad_to_multiple

IMAGE_CHANNELS = 3

#: the image plus prior channels
InChannels = Annotated[int, Field(ge=IMAGE_CHANNELS, le=4096)]
Width = Annotated[int, Field(ge=1, le=4096)]
#: blocks of one stage; 0 leaves only the stage's resampling (the official configs use up to 28)
Blocks = Annotated[int, Field(ge=0, le=256)]
#: blocks per level; every level doubles the channels and the padding multiple, so at most 8 levels
Levels = Annotated[tuple[Blocks, ...], Field(max_length=8)]
Expand = Annotated[int, Field(ge=1, le=16)]
Dropout = Annotated[float, Field(ge=0.0, lt=1.0)]


#: Inference (``inference_fast_path``: eval mode, no autograd, eager) computes the same maths in channels_last memory
#: format, where oneDNN's convolutions need no NCHW reorders, LayerNorm2d is one F.layer_norm kernel over the
#: contiguous NHWC view (instead of about nine elementwise passes) and each scaled residual is one addcmul; the other
#: options benchmarks/nafnet_inference.py measures were within noise of this or slower (benchmarks/README.md).


class LayerNorm2d(nn.Module):
    """Normalise over the channels at each pixel (biased variance), then a per-channel affine."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and inference_fast_path(self):
            # the NHWC view is contiguous: one fused kernel over the channels of each pixel
            nhwc = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
            return nhwc.permute(0, 3, 1, 2)
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them (C -> C/2)."""

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


def _conv1x1(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)


class _ResidualPair(nn.Module):
    """The two residual halves both blocks share: ``y = x + beta * spatial(x)``, ``y + gamma * ffn(y)``."""

    def _add_norms_and_scales(self, c: int, drop_out_rate: float) -> None:
        # added after the convs, as in the official __init__, so state_dict keys come in the official order
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        # zero scales make every block start as the identity
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def spatial(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def ffn(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, inp: Tensor) -> Tensor:
        if inference_fast_path(self):  # dropout is the identity; addcmul is the scaled residual in one kernel
            y = torch.addcmul(inp, self.spatial(self.norm1(inp)), self.beta)
            return torch.addcmul(y, self.ffn(self.norm2(y)), self.gamma)
        y = inp + self.dropout1(self.spatial(self.norm1(inp))) * self.beta
        return y + self.dropout2(self.ffn(self.norm2(y))) * self.gamma


class NAFBlock(_ResidualPair):
    """1x1 -> depthwise 3x3 -> SimpleGate -> simplified channel attention -> 1x1; then a SimpleGate FFN."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2, drop_out_rate: float = 0.0) -> None:
        super().__init__()
        dw_channels, ffn_channels = c * dw_expand, c * ffn_expand
        self.conv1 = _conv1x1(c, dw_channels)
        self.conv2 = nn.Conv2d(dw_channels, dw_channels, kernel_size=3, padding=1, groups=dw_channels)
        self.conv3 = _conv1x1(dw_channels // 2, c)
        # simplified channel attention; the global pool is what TLC replaces
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), _conv1x1(dw_channels // 2, dw_channels // 2))
        self.sg = SimpleGate()
        self.conv4 = _conv1x1(c, ffn_channels)
        self.conv5 = _conv1x1(ffn_channels // 2, c)
        self._add_norms_and_scales(c, drop_out_rate)

    def spatial(self, x: Tensor) -> Tensor:
        x = self.sg(self.conv2(self.conv1(x)))
        return self.conv3(x * self.sca(x))

    def ffn(self, x: Tensor) -> Tensor:
        return self.conv5(self.sg(self.conv4(x)))


class BaselineBlock(_ResidualPair):
    """1x1 -> depthwise 3x3 -> GELU -> squeeze-and-excitation -> 1x1; then a GELU FFN."""

    def __init__(self, c: int, dw_expand: int = 1, ffn_expand: int = 2, drop_out_rate: float = 0.0) -> None:
        super().__init__()
        dw_channels, ffn_channels = c * dw_expand, c * ffn_expand
        self.conv1 = _conv1x1(c, dw_channels)
        self.conv2 = nn.Conv2d(dw_channels, dw_channels, kernel_size=3, padding=1, groups=dw_channels)
        self.conv3 = _conv1x1(dw_channels, c)
        self.se = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            _conv1x1(dw_channels, dw_channels // 2),
            nn.ReLU(inplace=True),
            _conv1x1(dw_channels // 2, dw_channels),
            nn.Sigmoid(),
        )
        self.gelu = nn.GELU()
        self.conv4 = _conv1x1(c, ffn_channels)
        self.conv5 = _conv1x1(ffn_channels, c)
        self._add_norms_and_scales(c, drop_out_rate)

    def spatial(self, x: Tensor) -> Tensor:
        x = self.gelu(self.conv2(self.conv1(x)))
        return self.conv3(x * self.se(x))

    def ffn(self, x: Tensor) -> Tensor:
        return self.conv5(self.gelu(self.conv4(x)))


class _UShape(Backbone):
    """NAFNet's U-shape: stride-2 conv down, 1x1 conv + PixelShuffle up, skips added (not concatenated)."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        middle_blk_num: int,
        enc_blk_nums: tuple[int, ...],
        dec_blk_nums: tuple[int, ...],
        block: Callable[[int], nn.Module],
    ) -> None:
        super().__init__()
        if len(enc_blk_nums) != len(dec_blk_nums):
            # the official code zips them silently; a shorter decoder would not come back to full resolution
            raise ValueError(f"enc_blk_nums {enc_blk_nums} and dec_blk_nums {dec_blk_nums} must have equal lengths")
        # registration order follows the official __init__, so state_dict keys come in the official order
        self.intro = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.ending = nn.Conv2d(width, IMAGE_CHANNELS, kernel_size=3, padding=1)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.middle_blks = nn.Sequential()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        channels = width
        for num in enc_blk_nums:
            self.encoders.append(nn.Sequential(*[block(channels) for _ in range(num)]))
            self.downs.append(nn.Conv2d(channels, 2 * channels, kernel_size=2, stride=2))
            channels *= 2
        self.middle_blks.extend(block(channels) for _ in range(middle_blk_num))
        self._points: list[str] = []
        for level, num in zip(reversed(range(len(dec_blk_nums))), dec_blk_nums, strict=True):
            self.ups.append(
                nn.Sequential(nn.Conv2d(channels, 2 * channels, kernel_size=1, bias=False), nn.PixelShuffle(2))
            )
            channels //= 2
            self.decoders.append(nn.Sequential(*[block(channels) for _ in range(num)]))
            self._points.append(f"decoder_s{2**level}")
            self.insertion_points[self._points[-1]] = channels
        self.pad_multiple = 2 ** len(enc_blk_nums)

    def forward(self, image: Tensor, guidance: Guidance | None = None) -> Tensor:
        height, width = image.shape[-2:]
        fast = inference_fast_path(self)
        x = pad_to_multiple(image, self.pad_multiple)  # zeros on the right/bottom, as the official
        if fast:  # every op below keeps the format; see the note above LayerNorm2d
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.intro(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip, point in zip(self.decoders, self.ups, reversed(skips), self._points, strict=True):
            x = decoder(self.guide(point, up(x) + skip, guidance))
        out = image_residual(self.ending(x)[..., :height, :width], image)
        return out.contiguous() if fast else out


class NAFNet(_UShape):
    """NAFNet: the nonlinear-activation-free U-Net (defaults: the GoPro width-32 model, 17.11 M parameters).

    Args:
        in_channels: image channels plus prior channels (set by the stack builder); the output has 3.
        width: channels of the first level; each level below doubles them.
        middle_blk_num: NAFBlocks at the bottom of the U.
        enc_blk_nums: NAFBlocks per encoder level, top to bottom; inputs are padded to 2**len(enc_blk_nums).
        dec_blk_nums: NAFBlocks per decoder level, bottom to top (as many levels as the encoder).
        dw_expand: channel expansion of the depthwise conv (the official NAFNet always uses 2).
        ffn_expand: channel expansion of the feed-forward part (the official NAFNet always uses 2).
        drop_out_rate: dropout after each block's two branches (0: none, as every official config).
    """

    def __init__(
        self,
        in_channels: InChannels = 3,
        width: Width = 32,
        middle_blk_num: Blocks = 1,
        enc_blk_nums: Levels = (1, 1, 1, 28),
        dec_blk_nums: Levels = (1, 1, 1, 1),
        dw_expand: Expand = 2,
        ffn_expand: Expand = 2,
        drop_out_rate: Dropout = 0.0,
    ) -> None:
        super().__init__(
            in_channels,
            width,
            middle_blk_num,
            enc_blk_nums,
            dec_blk_nums,
            lambda c: NAFBlock(c, dw_expand, ffn_expand, drop_out_rate),
        )


class Baseline(_UShape):
    """NAFNet's Baseline: the same U-Net with GELU and squeeze-and-excitation blocks (defaults: GoPro width 32).

    Args:
        in_channels: image channels plus prior channels (set by the stack builder); the output has 3.
        width: channels of the first level; each level below doubles them.
        middle_blk_num: blocks at the bottom of the U.
        enc_blk_nums: blocks per encoder level, top to bottom; inputs are padded to 2**len(enc_blk_nums).
        dec_blk_nums: blocks per decoder level, bottom to top (as many levels as the encoder).
        dw_expand: channel expansion of the depthwise conv (official: 1 for width 32, 2 for width 64).
        ffn_expand: channel expansion of the feed-forward part (official: 2).
        drop_out_rate: dropout after each block's two branches (0: none, as every official config).
    """

    def __init__(
        self,
        in_channels: InChannels = 3,
        width: Width = 32,
        middle_blk_num: Blocks = 1,
        enc_blk_nums: Levels = (1, 1, 1, 28),
        dec_blk_nums: Levels = (1, 1, 1, 1),
        dw_expand: Expand = 1,
        ffn_expand: Expand = 2,
        drop_out_rate: Dropout = 0.0,
    ) -> None:
        super().__init__(
            in_channels,
            width,
            middle_blk_num,
            enc_blk_nums,
            dec_blk_nums,
            lambda c: BaselineBlock(c, dw_expand, ffn_expand, drop_out_rate),
        )
