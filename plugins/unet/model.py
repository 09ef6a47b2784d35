"""The U-Net of BladeNet's deblurring and blur-perception nets, with guidance insertion points.

Module names follow the official code (``inc``, ``down1``.., ``up1``.., ``outc``, ``double_conv``,
``maxpool_conv``) so that its state dicts map one to one. Deliberate differences: the input is
padded to a multiple of ``2**depth`` (reflect) and cropped back, where the official code pads
each upsampled map to its skip; inference (eval mode without autograd) folds BatchNorm into the
convolutions and runs channels-last, training keeps the official layers; the output may be a
global residual (default), BladeNet's sigmoid image, or the head's raw values (``linear``: the
logits of BladeNet's blur-perception MaskNet).

Official BladeNet files (``WholeNet`` state dicts, keys under ``deblurNet.``) load through
:meth:`UNet.remap_state_dict`: the official code reads images in BGR order, so the first convolution's
image channels and the head's output channels are reversed on load, and the model then takes and
returns RGB like every deblurstack model. The SAUp blocks' attention parts belong to the ``bsa``
prior, which claims those keys.
"""

from __future__ import annotations

from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from deblurstack import (
    Backbone,
    Guidance,
    folded_conv3x3,
    image_residual,
    inference_fast_path,
    pad_to_multiple,
)

Channels = Annotated[int, Field(ge=1, le=4096)]


class DoubleConv(nn.Module):
    """(3x3 conv -> BatchNorm -> ReLU) twice; ``batch_norm=False`` leaves the normalisation out."""

    def __init__(
        self, in_channels: int, out_channels: int, mid_channels: int | None = None, batch_norm: bool = True
    ) -> None:
        super().__init__()
        mid_channels = mid_channels or out_channels

        def norm(channels: int) -> nn.Module:
            return nn.BatchNorm2d(channels) if batch_norm else nn.Identity()  # Identity keeps the key indices

        self.double_conv = nn.Sequential(
            nn.Conv2d(in_channels, mid_channels, kernel_size=3, padding=1),
            norm(mid_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(mid_channels, out_channels, kernel_size=3, padding=1),
            norm(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if not inference_fast_path(self):
            return self.double_conv(x)
        for conv, norm in ((self.double_conv[0], self.double_conv[1]), (self.double_conv[3], self.double_conv[4])):
            x = folded_conv3x3(x, conv, norm).relu_()  # BN folded into the conv
        return x


class Down(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool = True) -> None:
        super().__init__()
        self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(in_channels, out_channels, batch_norm=batch_norm))

    def forward(self, x: Tensor) -> Tensor:
        return self.maxpool_conv(x)


class Up(nn.Module):
    """Bilinear x2, concatenate [skip, upsampled], guidance point, DoubleConv(in -> in/2 -> out)."""

    def __init__(self, in_channels: int, out_channels: int, point: str, batch_norm: bool = True) -> None:
        super().__init__()
        self.point = point
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        self.conv = DoubleConv(in_channels, out_channels, in_channels // 2, batch_norm)

    def forward(self, x: Tensor, skip: Tensor, guidance: Guidance | None) -> Tensor:
        x = torch.cat([skip, self.up(x)], dim=1)
        return self.conv(Backbone.guide(self.point, x, guidance))


class OutConv(nn.Module):
    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class UNet(Backbone):
    """U-Net with ``depth`` max-pool levels; channels ``width * 2**level``, halved at the bottom.

    Args:
        in_channels: image channels plus prior channels (set by the stack builder).
        out_channels: output image channels.
        width: channels of the first level (BladeNet: 64).
        depth: number of down-sampling levels (BladeNet: 4).
        output: ``residual`` adds the input image; ``sigmoid`` returns sigmoid(head) as BladeNet does;
            ``linear`` returns the head as it is (logits).
        norm: ``batch`` (BladeNet) or ``none``, e.g. for small per-process batches under DDP.
    """

    def __init__(
        self,
        in_channels: Channels = 3,
        out_channels: Channels = 3,
        width: Annotated[int, Field(ge=2, le=4096)] = 64,
        # the bottom level has width * 2**(depth - 1) channels and inputs are padded to 2**depth
        depth: Annotated[int, Field(ge=1, le=10)] = 4,
        output: Literal["residual", "sigmoid", "linear"] = "residual",
        norm: Literal["batch", "none"] = "batch",
    ) -> None:
        super().__init__()
        self.output = output
        self.residual = output == "residual"
        self.depth = depth
        self.pad_multiple = 2**depth
        # encoder level k has width * 2**k channels; the bottom repeats the level above (bilinear U-Net)
        channels = [width * 2**k for k in range(depth)] + [width * 2 ** (depth - 1)]
        batch_norm = norm == "batch"
        self.inc = DoubleConv(in_channels, channels[0], batch_norm=batch_norm)
        for k in range(1, depth + 1):
            self.add_module(f"down{k}", Down(channels[k - 1], channels[k], batch_norm))
        for j in range(1, depth + 1):
            level = depth - j  # resolution level the block outputs
            concatenated = 2 * channels[level]  # skip + upsampled map, which have equal widths
            out = channels[level - 1] if level > 0 else width
            point = f"decoder_s{2**level}"
            self.add_module(f"up{j}", Up(concatenated, out, point, batch_norm))
            self.insertion_points[point] = concatenated
        self.outc = OutConv(width, out_channels)

    def forward(self, image: Tensor, guidance: Guidance | None = None) -> Tensor:
        height, width = image.shape[-2:]
        x = pad_to_multiple(image, self.pad_multiple, mode="reflect")
        fast = inference_fast_path(self)
        if fast:  # channels-last convolutions skip oneDNN's layout reorders (benchmarks/bladenet_inference.py)
            x = x.contiguous(memory_format=torch.channels_last)
        skips = [self.inc(x)]
        for k in range(1, self.depth + 1):
            skips.append(getattr(self, f"down{k}")(skips[-1]))
        x = skips.pop()
        for j in range(1, self.depth + 1):
            x = getattr(self, f"up{j}")(x, skips.pop(), guidance)
        x = self.outc(x)[..., :height, :width]
        if fast:
            x = x.contiguous()
        if self.output == "sigmoid":
            return torch.sigmoid(x)
        return image_residual(x, image) if self.residual else x

    def remap_state_dict(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """Accept the DeblurNet part of an official BladeNet file (keys ``deblurNet.*``), converted to RGB."""
        if not any(key.startswith(OFFICIAL_PREFIX) for key in state):
            return state
        mapped = {key.removeprefix(OFFICIAL_PREFIX).replace(".deChannelConv.", ".conv."): v for key, v in state.items()}
        for key, dim in (("inc.double_conv.0.weight", 1), ("outc.conv.weight", 0), ("outc.conv.bias", 0)):
            if key in mapped:
                mapped[key] = bgr_to_rgb(mapped[key], dim)
        return mapped


#: where an official BladeNet ``WholeNet`` file keeps the deblurring U-Net
OFFICIAL_PREFIX = "deblurNet."


def bgr_to_rgb(weight: Tensor, dim: int) -> Tensor:
    """Reverse the first three entries of ``dim`` (the image channels), keeping the rest (prior channels)."""
    colours = weight.narrow(dim, 0, 3).flip(dim)
    return torch.cat([colours, weight.narrow(dim, 3, weight.shape[dim] - 3)], dim)
