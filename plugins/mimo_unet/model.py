"""MIMO-UNet and MIMO-UNet+ (Cho et al., ICCV 2021): one U-Net with three input and three output scales.

Module names and their order follow the official code (chosj95/MIMO-UNet, ``models/MIMOUNet.py`` and
``models/layers.py``: ``Encoder``, ``feat_extract``, ``Decoder``, ``Convs``, ``ConvsOut``, ``AFFs``,
``FAM1``/``SCM1``/``FAM2``/``SCM2``, ``main``, ``layers``, ``merge``, ``conv``), so the released files
(``{"model": state_dict}``) load strictly. Deliberate differences, none of which changes the maths
for a 3-channel input whose sides are multiples of 4:

* any ``H x W``: the input is reflect-padded to a multiple of 4 and every scale cropped back (the
  official model takes multiples of 4 only);
* ``in_channels > 3`` (prior channels): the first convolution and the two SCMs take every input
  channel, and the residuals add the image channels only;
* guidance insertion points at the input of each decoder stage.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from deblurstack import Backbone, Guidance, image_residual, pad_to_multiple


class BasicConv(nn.Module):
    """Conv with bias (padding ``k // 2``), or a 4x4 stride-2 transposed conv (padding 1), then optional ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        relu: bool = True,
        transpose: bool = False,
    ) -> None:
        super().__init__()
        if transpose:
            conv = nn.ConvTranspose2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2 - 1)
        else:
            conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2)
        self.main = nn.Sequential(conv, nn.ReLU(inplace=True)) if relu else nn.Sequential(conv)

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x)


class ResBlock(nn.Module):
    """``x + conv3x3(relu(conv3x3(x)))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(BasicConv(channels, channels, 3), BasicConv(channels, channels, 3, relu=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.main(x) + x


class ResBlocks(nn.Module):
    """``num_res`` ResBlocks at constant width: the official EBlock and DBlock, which are identical."""

    def __init__(self, channels: int, num_res: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(*(ResBlock(channels) for _ in range(num_res)))

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


class SCM(nn.Module):
    """Shallow convolutional module: features of a downsampled input, concatenated with the input itself."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.main = nn.Sequential(
            BasicConv(in_channels, channels // 4, 3),
            BasicConv(channels // 4, channels // 2, 1),
            BasicConv(channels // 2, channels // 2, 3),
            BasicConv(channels // 2, channels - in_channels, 1),  # official: channels - 3
        )
        self.conv = BasicConv(channels, channels, 1, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(torch.cat([x, self.main(x)], dim=1))


class FAM(nn.Module):
    """Feature attention module: ``encoder + conv3x3(encoder * scm)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.merge = BasicConv(channels, channels, 3, relu=False)

    def forward(self, encoder: Tensor, scm: Tensor) -> Tensor:
        return encoder + self.merge(encoder * scm)


class AFF(nn.Module):
    """Asymmetric feature fusion: the three encoder scales, concatenated, then conv1x1 + ReLU and conv3x3."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            BasicConv(in_channels, out_channels, 1), BasicConv(out_channels, out_channels, 3, relu=False)
        )

    def forward(self, *features: Tensor) -> Tensor:
        return self.conv(torch.cat(features, dim=1))


def _resize(x: Tensor, factor: float) -> Tensor:
    return F.interpolate(x, scale_factor=factor, mode="nearest")  # the official default mode


class MIMOUNet(Backbone):
    """MIMO-UNet; ``num_res=20, dropout=0.1`` is MIMO-UNet+.

    ``forward`` returns ``[out_1/4, out_1/2, out_1]``: the output at scale ``1/k`` is a residual on the
    nearest-downsampled input ``x[..., ::k, ::k]`` (its first 3 channels) cropped to ``H // k x W // k``:
    the floor that ``F.interpolate(x, scale_factor=1/k)`` gives, like the official input pyramid and
    loss targets. Every pixel kept therefore comes from a real (not padded) input pixel.

    Args:
        in_channels: image channels plus prior channels (set by the stack builder).
        num_res: ResBlocks per encoder and decoder stage: 8 for MIMO-UNet, 20 for MIMO-UNet+.
        base_channel: channels at full resolution (32 in both official models); 2x and 4x below.
        dropout: Dropout2d probability on the two fused skips (MIMO-UNet+: 0.1, MIMO-UNet: none).
    """

    pad_multiple = 4

    def __init__(
        self,
        in_channels: Annotated[int, Field(ge=3, le=4096)] = 3,
        num_res: Annotated[int, Field(ge=0, le=256)] = 8,  # MIMO-UNet+ has 20
        base_channel: Annotated[int, Field(ge=2, le=4096)] = 32,  # the coarsest scale has 4 x base_channel
        dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0,
    ) -> None:
        super().__init__()
        if 2 * base_channel <= in_channels:  # the SCMs add 2 * base_channel - in_channels feature channels
            raise ValueError(
                f"need 2 * base_channel > in_channels; got in_channels={in_channels}, base_channel={base_channel}"
            )
        c = base_channel
        self.Encoder = nn.ModuleList([ResBlocks(c, num_res), ResBlocks(2 * c, num_res), ResBlocks(4 * c, num_res)])
        self.feat_extract = nn.ModuleList(
            [
                BasicConv(in_channels, c, 3),
                BasicConv(c, 2 * c, 3, stride=2),
                BasicConv(2 * c, 4 * c, 3, stride=2),
                BasicConv(4 * c, 2 * c, 4, stride=2, transpose=True),
                BasicConv(2 * c, c, 4, stride=2, transpose=True),
                BasicConv(c, 3, 3, relu=False),
            ]
        )
        self.Decoder = nn.ModuleList([ResBlocks(4 * c, num_res), ResBlocks(2 * c, num_res), ResBlocks(c, num_res)])
        self.Convs = nn.ModuleList([BasicConv(4 * c, 2 * c, 1), BasicConv(2 * c, c, 1)])
        self.ConvsOut = nn.ModuleList([BasicConv(4 * c, 3, 3, relu=False), BasicConv(2 * c, 3, 3, relu=False)])
        self.AFFs = nn.ModuleList([AFF(7 * c, c), AFF(7 * c, 2 * c)])
        self.FAM1 = FAM(4 * c)
        self.SCM1 = SCM(in_channels, 4 * c)
        self.FAM2 = FAM(2 * c)
        self.SCM2 = SCM(in_channels, 2 * c)
        # MIMO-UNet+ drops whole channels of the fused skips; MIMO-UNet has no dropout (no state either way)
        self.drop1 = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.drop2 = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.insertion_points = {"decoder_s4": 4 * c, "decoder_s2": 2 * c, "decoder_s1": c}

    def forward(self, image: Tensor, guidance: Guidance | None = None) -> list[Tensor]:
        height, width = image.shape[-2:]
        # Reflect, not zeros: at most 3 padded rows/columns that continue the image, where zeros would
        # add a dark step edge the network would try to deblur. Multiples of 4 are not padded.
        x = pad_to_multiple(image, self.pad_multiple, mode="reflect")
        x_2 = _resize(x, 0.5)
        x_4 = _resize(x_2, 0.5)
        z2, z4 = self.SCM2(x_2), self.SCM1(x_4)

        res1 = self.Encoder[0](self.feat_extract[0](x))
        res2 = self.Encoder[1](self.FAM2(self.feat_extract[1](res1), z2))
        z = self.Encoder[2](self.FAM1(self.feat_extract[2](res2), z4))

        z42 = _resize(z, 2)
        skip2 = self.drop2(self.AFFs[1](_resize(res1, 0.5), res2, z42))
        skip1 = self.drop1(self.AFFs[0](res1, _resize(res2, 2), _resize(z42, 2)))

        z = self.Decoder[0](self.guide("decoder_s4", z, guidance))
        out_4 = self.ConvsOut[0](z)
        z = self.Convs[0](torch.cat([self.feat_extract[3](z), skip2], dim=1))
        z = self.Decoder[1](self.guide("decoder_s2", z, guidance))
        out_2 = self.ConvsOut[1](z)
        z = self.Convs[1](torch.cat([self.feat_extract[4](z), skip1], dim=1))
        z = self.Decoder[2](self.guide("decoder_s1", z, guidance))
        out_1 = self.feat_extract[5](z)

        outputs = []
        for k, out, inputs in ((4, out_4, x_4), (2, out_2, x_2), (1, out_1, x)):
            h, w = height // k, width // k  # floor, as F.interpolate(image, scale_factor=1/k)
            outputs.append(image_residual(out[..., :h, :w], inputs[..., :h, :w]))
        return outputs
