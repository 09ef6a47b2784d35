"""A U-Net decoder on the feature pyramid of a timm encoder.

The encoder comes from ``timm.create_model(name, features_only=True)``. Pretrained weights are read
from a local file through timm's own loader (``pretrained_cfg_overlay={"file": ...}``, which loads
with ``weights_only=True`` and maps full-model keys onto the feature extractor); nothing is ever
downloaded. With pretrained weights, prior channels widen the encoder's first convolution with
zero weights, so the encoder starts out seeing the image exactly as it was trained to.
"""

from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field
from torch import Tensor, nn

from deblurstack import Backbone, DeblurstackError, Guidance, image_residual, pad_to_multiple
from deblurstack.errors import did_you_mean
from deblurstack.params import ExistingFile


def _timm_model(name: str) -> str:
    """``name`` if timm knows the architecture (a pretrained tag like ``resnet18.a1_in1k`` is allowed)."""
    import timm

    if not timm.is_model(name):
        raise ValueError(f"timm has no model {name!r}{did_you_mean(name, timm.list_models())}")
    return name


TimmModel = Annotated[str, AfterValidator(_timm_model)]


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU(True)]


class DecoderStage(nn.Module):
    """Upsample x2 to ``stride``, concatenate the encoder's map there (if any), guidance point, two convolutions."""

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.point = f"decoder_s{stride}"
        self.block = nn.Sequential(
            *conv_bn_relu(in_channels + skip_channels, out_channels), *conv_bn_relu(out_channels, out_channels)
        )

    def forward(self, x: Tensor, skip: Tensor | None, guidance: Guidance | None) -> Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        if skip is not None:
            x = torch.cat([x, skip], dim=1)
        return self.block(Backbone.guide(self.point, x, guidance))


class TimmUNet(Backbone):
    """U-Net with a timm encoder.

    Args:
        encoder: timm model name with ``features_only`` support, e.g. ``resnet18``, ``efficientnet_b0``,
            ``convnext_nano`` (``timm.list_models()`` lists them).
        in_channels: image channels plus prior channels (set by the stack builder).
        encoder_weights: local file of the encoder's pretrained weights (timm or torchvision state dict,
            ``.pth``/``.safetensors``); unset for random initialisation. Never downloaded.
        decoder_width: channels of the finest decoder stage; each coarser stage doubles it (up to 256).
    """

    def __init__(
        self,
        encoder: TimmModel = "resnet18",
        in_channels: Annotated[int, Field(ge=3, le=4096)] = 3,
        encoder_weights: ExistingFile | None = None,
        decoder_width: Annotated[int, Field(ge=1, le=256)] = 16,  # stages are capped at 256 channels anyway
    ) -> None:
        super().__init__()
        import timm

        if encoder_weights is None:
            self.encoder = timm.create_model(encoder, features_only=True, in_chans=in_channels)
        else:  # load the 3-channel weights, then widen: prior channels start with zero weight
            self.encoder = timm.create_model(
                encoder, features_only=True, pretrained=True, pretrained_cfg_overlay={"file": str(encoder_weights)}
            )
            if in_channels != 3:
                _widen_first_convolution(self.encoder, in_channels)
        reductions = self.encoder.feature_info.reduction()
        channels = self.encoder.feature_info.channels()
        self.pad_multiple = reductions[-1]
        # decoder: from the deepest feature map up to full resolution, one stage per factor of 2
        stages, current, stride = [], channels[-1], reductions[-1]
        skips = dict(zip(reductions, channels, strict=True))
        while stride > 1:
            stride //= 2
            width = min(decoder_width * stride, 256)
            stages.append(DecoderStage(current, skips.get(stride, 0), width, stride))
            self.insertion_points[stages[-1].point] = current + skips.get(stride, 0)
            current = width
        self.decoder = nn.ModuleList(stages)
        self.head = nn.Conv2d(current, 3, 3, padding=1)

    def forward(self, image: Tensor, guidance: Guidance | None = None) -> Tensor:
        height, width = image.shape[-2:]
        x = pad_to_multiple(image, self.pad_multiple, mode="reflect")
        features = dict(zip(self.encoder.feature_info.reduction(), self.encoder(x), strict=True))
        y = features[self.pad_multiple]
        for stage in self.decoder:
            y = stage(y, features.get(stage.stride), guidance)
        return image_residual(self.head(y)[..., :height, :width], image)


def _widen_first_convolution(encoder: nn.Module, in_channels: int) -> None:
    """Give the first 3-channel convolution ``in_channels`` inputs; the extra ones start at zero weight."""
    for parent in encoder.modules():
        for name, child in parent.named_children():
            if isinstance(child, nn.Conv2d) and child.in_channels == 3:
                wider = nn.Conv2d(
                    in_channels,
                    child.out_channels,
                    child.kernel_size,
                    child.stride,
                    child.padding,
                    child.dilation,
                    child.groups,
                    child.bias is not None,
                )
                with torch.no_grad():
                    wider.weight.zero_()
                    wider.weight[:, :3] = child.weight
                    if child.bias is not None:
                        wider.bias.copy_(child.bias)
                setattr(parent, name, wider)
                return
    raise DeblurstackError("timm_unet: the encoder has no 3-channel input convolution to widen for prior channels")
