"""Restormer, following swz30/Restormer ``basicsr/models/archs/restormer_arch.py``.

Module names reproduce the official ``state_dict`` keys, so the release files (key ``params``)
load with ``strict=True``. Deliberate differences: ``forward`` reflect-pads to a multiple of 8
and crops back (the official test scripts do this outside the model; images smaller than the
padding are replicate-padded, where the official script would fail); prior channels enter
``patch_embed`` and the global residual adds only the three image channels; guidance acts on
the decoder inputs; inference (``inference_fast_path``) runs a faster formulation of the same maths, see
``TransformerBlock.forward``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from deblurstack import Backbone, Guidance, image_residual, inference_fast_path, pad_to_multiple

#: the latent level has 8 * dim channels
Dim = Annotated[int, Field(ge=1, le=4096)]
#: transformer blocks of one level (the official model: 4 to 8); 0 leaves only the level's resampling
Blocks = Annotated[int, Field(ge=0, le=256)]
Heads = Annotated[int, Field(ge=1, le=4096)]
#: pixels per strip of rows at inference (see _row_strips)
_STRIP_PIXELS = 8192


def _row_strips(height: int, width: int) -> Iterator[tuple[int, int, int, int]]:
    """``(top, bottom, above, below)``: strips of rows ``top:bottom`` and the rows ``above:below`` they need.

    The inference paths of both halves of a block run their 1x1 and depthwise 3x3 convolutions strip
    by strip (one more row above and below, computed and discarded), so that the 3C and 2 x hidden
    channel intermediates stay small enough to be reused from the heap and the caches, where
    whole-image ones are fresh memory (page faults) on every call.
    """
    rows = max(1, _STRIP_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        yield top, bottom, max(top - 1, 0), min(bottom + 1, height)


class _Norm(nn.Module):
    """Normalises each pixel over its channels (eps 1e-5, biased variance)."""

    def __init__(self, channels: int, with_bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels)) if with_bias else None

    def forward(self, x: Tensor) -> Tensor:
        if x.is_contiguous(memory_format=torch.channels_last) and inference_fast_path(self):
            return self._over_nhwc(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        variance = x.var(dim=1, keepdim=True, unbiased=False)
        if self.bias is None:  # BiasFree: scaled by the std around the mean, but the mean is not subtracted
            return x / torch.sqrt(variance + 1e-5) * self.weight[:, None, None]
        x = (x - x.mean(dim=1, keepdim=True)) / torch.sqrt(variance + 1e-5)
        return x * self.weight[:, None, None] + self.bias[:, None, None]

    def _over_nhwc(self, nhwc: Tensor) -> Tensor:
        """The same over the contiguous last dimension of an NHWC view: one kernel for WithBias."""
        if self.bias is None:
            return nhwc * torch.rsqrt(nhwc.var(dim=-1, keepdim=True, unbiased=False) + 1e-5) * self.weight
        return F.layer_norm(nhwc, nhwc.shape[-1:], self.weight, self.bias, 1e-5)


class LayerNorm(nn.Module):
    """Channel LayerNorm, ``WithBias`` or ``BiasFree``; the ``body`` level keeps the official key names."""

    def __init__(self, channels: int, kind: str) -> None:
        super().__init__()
        self.body = _Norm(channels, with_bias=kind != "BiasFree")  # as the official code: anything else is WithBias

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class FeedForward(nn.Module):
    """GDFN: 1x1 expand to 2 x hidden, depthwise 3x3, GELU(x1) * x2, 1x1 back."""

    def __init__(self, dim: int, expansion: float, bias: bool) -> None:
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=bias)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)

    def residual_inference(self, x: Tensor, residual: Tensor) -> Tensor:
        """``residual + self(x)`` without autograd, strip by strip (see ``_row_strips``)."""
        out = torch.empty_like(residual)
        for top, bottom, above, below in _row_strips(*x.shape[-2:]):
            x1, x2 = self.dwconv(self.project_in(x[:, :, above:below])).chunk(2, dim=1)
            gate = F.gelu(x1).mul_(x2)[:, :, top - above : bottom - above]
            torch.add(self.project_out(gate), residual[:, :, top:bottom], out=out[:, :, top:bottom])
        return out


class Attention(nn.Module):
    """MDTA: per head, a (C/h) x (C/h) attention map between channels, so the cost is linear in H x W."""

    def __init__(self, dim: int, heads: int, bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        height, width = x.shape[-2:]
        q, k, v = (
            rearrange(t, "b (head c) h w -> b head c (h w)", head=self.heads)
            for t in self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        )
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)  # L2 along H*W
        attention = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        out = rearrange(attention @ v, "b head c (h w) -> b (head c) h w", h=height, w=width)
        return self.project_out(out)

    def residual_inference(self, x: Tensor, residual: Tensor) -> Tensor:
        """``residual + self(x)`` without autograd, for channels_last ``x`` and ``residual``, in fewer passes.

        q and k are not normalised: each head's Gram matrix q k^T, accumulated strip by strip (see
        ``_row_strips``), is divided by the outer product of their L2 norms (clamped at 1e-12 as
        F.normalize does). The attention map then acts on v and project_out follows, both linear in
        v, so they are one (C x C) matrix ``W_out blockdiag(A)``, applied to v by one batched matmul
        that also adds the residual.
        """
        batch, channels, height, width = x.shape
        heads, size = self.heads, channels // self.heads
        gram = x.new_zeros(batch, heads, size, size)
        squares = x.new_zeros(batch, 2 * channels)
        v = x.new_empty(batch, height, width, channels)
        for top, bottom, above, below in _row_strips(height, width):
            qkv = self.qkv_dwconv(self.qkv(x[:, :, above:below]))[:, :, top - above : bottom - above]
            qkv = qkv.permute(0, 2, 3, 1).reshape(batch, -1, 3 * channels)  # (b, pixels, 3C)
            q, k, v[:, top:bottom] = (
                qkv[..., :channels],
                qkv[..., channels : 2 * channels],
                qkv[..., 2 * channels :].unflatten(1, (bottom - top, width)),
            )
            for head in range(heads):
                part = slice(head * size, (head + 1) * size)
                gram[:, head].baddbmm_(q[..., part].transpose(1, 2), k[..., part])
            squares += qkv[..., : 2 * channels].square().sum(dim=1)
        norms = squares.sqrt_().clamp_min_(1e-12)
        q_norm, k_norm = (
            norms[:, :channels].view(batch, heads, size, 1),
            norms[:, channels:].view(batch, heads, 1, size),
        )
        attention = (gram / (q_norm * k_norm) * self.temperature).softmax(dim=-1)
        weight = self.project_out.weight.view(channels, heads, size)
        mixing = torch.einsum("ohi,bhij->bohj", weight, attention).reshape(batch, channels, channels)
        base = residual.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        if self.project_out.bias is not None:
            base = base + self.project_out.bias
        out = torch.baddbmm(base, v.view(batch, height * width, channels), mixing.transpose(1, 2))
        return out.view(batch, height, width, channels).permute(0, 3, 1, 2)  # NHWC memory: channels_last


class TransformerBlock(nn.Module):
    """Pre-norm: ``x + MDTA(LN(x))``, then ``x + GDFN(LN(x))``."""

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool, norm: str) -> None:
        super().__init__()
        self.norm1 = LayerNorm(dim, norm)
        self.attn = Attention(dim, heads, bias)
        self.norm2 = LayerNorm(dim, norm)
        self.ffn = FeedForward(dim, expansion, bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.is_contiguous(memory_format=torch.channels_last) and inference_fast_path(self):
            # channels_last activations (oneDNN's depthwise convolutions are 2-3x faster on them), one
            # F.layer_norm per norm, the residual adds fused; benchmarks/restormer_inference.py measures each
            x = self.attn.residual_inference(self.norm1(x), x)
            return self.ffn.residual_inference(self.norm2(x), x)
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class OverlapPatchEmbed(nn.Module):
    def __init__(self, in_channels: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, 3, padding=1, bias=False)  # never a bias, as the official code

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class Downsample(nn.Module):
    """3x3 conv C -> C/2, then PixelUnshuffle(2): 2C channels at half resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Upsample(nn.Module):
    """3x3 conv C -> 2C, then PixelShuffle(2): C/2 channels at double resolution."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, channels * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class Restormer(Backbone):
    """Restormer: a 4-level U-Net of transformer blocks (channels dim, 2dim, 4dim, 8dim).

    Args:
        in_channels: image channels plus prior channels (set by the stack builder); the official
            dual-pixel model takes 6 (left and right views).
        dim: channels of the first level.
        num_blocks: transformer blocks per level, from full resolution to the latent level
            (the decoder reuses the counts of levels 1 to 3).
        num_refinement_blocks: blocks after the level-1 decoder.
        heads: attention heads per level.
        ffn_expansion_factor: hidden width of the feed-forward network relative to its input.
        bias: biases in the convolutions, except the embedding and the resampling ones (as the official code).
        layer_norm: ``WithBias`` (deblurring configs) or ``BiasFree`` (denoising configs: the mean
            is not subtracted).
        dual_pixel_task: the official dual-pixel defocus model: a 1x1 skip from the embedding to
            the refinement output and no global residual.
    """

    pad_multiple = 8  # three 2x down-samplings

    def __init__(
        self,
        in_channels: Annotated[int, Field(ge=1, le=4096)] = 3,
        dim: Dim = 48,
        num_blocks: tuple[Blocks, Blocks, Blocks, Blocks] = (4, 6, 6, 8),
        num_refinement_blocks: Blocks = 4,
        heads: tuple[Heads, Heads, Heads, Heads] = (1, 2, 4, 8),
        # the feed-forward network's hidden width is int(channels * ffn_expansion_factor)
        ffn_expansion_factor: Annotated[float, Field(gt=0.0, le=64.0)] = 2.66,
        bias: bool = False,
        layer_norm: Literal["WithBias", "BiasFree"] = "WithBias",
        dual_pixel_task: bool = False,
    ) -> None:
        super().__init__()
        for level, count in enumerate(heads):
            if (dim * 2**level) % count:  # a relation between two parameters, which no hint can state
                raise ValueError(
                    f"heads[{level}]={count} must divide the {dim * 2**level} channels of level {level + 1} "
                    f"(dim * {2**level}); heads={tuple(heads)}, dim={dim}"
                )
        if int(dim * ffn_expansion_factor) < 1:
            raise ValueError(
                f"ffn_expansion_factor={ffn_expansion_factor} gives the {dim}-channel level no hidden channels"
            )

        def blocks(count: int, channels: int, head_count: int) -> nn.Sequential:
            return nn.Sequential(
                *(TransformerBlock(channels, head_count, ffn_expansion_factor, bias, layer_norm) for _ in range(count))
            )

        # attribute names and their order are those of the official state_dict
        self.patch_embed = OverlapPatchEmbed(in_channels, dim)
        self.encoder_level1 = blocks(num_blocks[0], dim, heads[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = blocks(num_blocks[1], dim * 2, heads[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = blocks(num_blocks[2], dim * 4, heads[2])
        self.down3_4 = Downsample(dim * 4)
        self.latent = blocks(num_blocks[3], dim * 8, heads[3])
        self.up4_3 = Upsample(dim * 8)
        self.reduce_chan_level3 = nn.Conv2d(dim * 8, dim * 4, 1, bias=bias)
        self.decoder_level3 = blocks(num_blocks[2], dim * 4, heads[2])
        self.up3_2 = Upsample(dim * 4)
        self.reduce_chan_level2 = nn.Conv2d(dim * 4, dim * 2, 1, bias=bias)
        self.decoder_level2 = blocks(num_blocks[1], dim * 2, heads[1])
        self.up2_1 = Upsample(dim * 2)  # no channel reduction: level 1 of the decoder works at 2 * dim
        self.decoder_level1 = blocks(num_blocks[0], dim * 2, heads[0])
        self.refinement = blocks(num_refinement_blocks, dim * 2, heads[0])
        self.dual_pixel_task = dual_pixel_task
        if dual_pixel_task:
            self.skip_conv = nn.Conv2d(dim, dim * 2, 1, bias=bias)
        self.output = nn.Conv2d(dim * 2, 3, 3, padding=1, bias=bias)
        self.insertion_points = {"decoder_s4": dim * 4, "decoder_s2": dim * 2, "decoder_s1": dim * 2}

    def forward(self, image: Tensor, guidance: Guidance | None = None) -> Tensor:
        height, width = image.shape[-2:]
        x = pad_to_multiple(image, self.pad_multiple, mode="reflect")  # as Motion_Deblurring/test.py
        if inference_fast_path(self):
            x = x.contiguous(memory_format=torch.channels_last)  # every layer below keeps the format
        embedded = self.patch_embed(x)
        enc1 = self.encoder_level1(embedded)
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        x = self.latent(self.down3_4(enc3))
        x = self.reduce_chan_level3(torch.cat([self.up4_3(x), enc3], dim=1))
        x = self.decoder_level3(self.guide("decoder_s4", x, guidance))
        x = self.reduce_chan_level2(torch.cat([self.up3_2(x), enc2], dim=1))
        x = self.decoder_level2(self.guide("decoder_s2", x, guidance))
        x = torch.cat([self.up2_1(x), enc1], dim=1)
        x = self.refinement(self.decoder_level1(self.guide("decoder_s1", x, guidance)))
        if self.dual_pixel_task:
            out = self.output(x + self.skip_conv(embedded))[..., :height, :width]
        else:
            out = image_residual(self.output(x)[..., :height, :width], image)
        return out.contiguous()  # NCHW, whichever path ran
