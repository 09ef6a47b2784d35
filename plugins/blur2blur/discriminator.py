"""Blur2Blur's discriminator: an unconditional PatchGAN applied, with the same weights, to every output scale.

The layers and module names follow the official ``NLayerDiscriminator`` (VinAIResearch/Blur2Blur,
``models/networks.py``, the pix2pix/CycleGAN PatchGAN), so the official ``latest_net_D.pth`` loads strictly:
``model.0`` conv, ``model.1`` LeakyReLU, then per layer conv / norm / LeakyReLU, and the last conv at
``model.11`` for three layers. Deliberate differences from the official class, none of which changes the maths:

* a single tensor is one scale (the official ``forward`` iterates over its argument, so a plain tensor is
  split along the batch into unbatched samples, which is what its gradient penalty relies on);
* the weights are initialised in the constructor (the official ``define_D`` calls ``init_weights`` after it);
  ``init="normal"`` draws exactly what ``define_D(..., init_type="normal", init_gain=0.02)`` draws from the
  same global random state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field
from torch import Tensor, nn

from deblurstack import Discriminator

__all__ = ["PatchGAN"]


class PatchGAN(Discriminator):
    """PatchGAN discriminator: ``n_layers`` stride-2 4x4 convs, one stride-1 conv, then a 1-channel 4x4 conv.

    ``conv(in, ndf, s2) + LReLU(0.2)``, then for ``n = 1 .. n_layers - 1``
    ``conv(ndf * min(2^(n-1), 8), ndf * min(2^n, 8), s2) + norm + LReLU(0.2)``, then
    ``conv(., ndf * min(2^n_layers, 8), s1) + norm + LReLU(0.2)`` and ``conv(., 1, s1)``; every conv has
    kernel 4 and padding 1. The logit map is 30 x 30 for a 256 x 256 input (14 x 14 at 128, 6 x 6 at 64):
    each logit sees a 70 x 70 patch.

    Official defaults (``options/base_options.py``, ``models/blur2blur_model.py``): ``ndf=64``,
    ``n_layers_D=3`` (``--netD basic``), ``--norm batch`` (the Blur2Blur model overrides the base option's
    ``instance``), ``--init_type normal --init_gain 0.02``. The official training script
    (``scripts/train.sh``) passes ``--norm instance``, which is this class's default.

    Args:
        in_channels: channels of the images (3).
        ndf: channels of the first conv; later convs have up to 8x as many.
        n_layers: number of stride-2 convs (3: the 70 x 70 PatchGAN).
        norm: ``instance``: ``InstanceNorm2d`` without affine parameters or running statistics, and every conv
            has a bias; ``batch``: ``BatchNorm2d`` (affine, running statistics), and the convs before it have
            no bias, as officially.
        scales: how many images a list passed to :meth:`forward` holds (Blur2Blur: 3, the translator's
            coarse-to-fine outputs at 1/4, 1/2 and 1).
        init: ``normal``: the official ``init_weights``: every conv weight N(0, 0.02) and bias 0, every
            ``BatchNorm2d`` weight N(1, 0.02) and bias 0, drawn from the global random generator in the
            official order; ``default``: PyTorch's default initialisation.
    """

    def __init__(
        self,
        in_channels: Annotated[int, Field(ge=1)] = 3,
        ndf: Annotated[int, Field(ge=1)] = 64,
        n_layers: Annotated[int, Field(ge=1)] = 3,
        norm: Literal["instance", "batch"] = "instance",
        scales: Annotated[int, Field(ge=1)] = 3,
        init: Literal["normal", "default"] = "normal",
    ) -> None:
        super().__init__()
        self.scales = scales
        self.norm = norm

        def normalisation(channels: int) -> nn.Module:
            if norm == "batch":
                return nn.BatchNorm2d(channels, affine=True, track_running_stats=True)
            return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)

        bias = norm == "instance"  # BatchNorm's affine shift makes a conv bias redundant
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
        multiple = 1
        for n in range(1, n_layers):
            previous, multiple = multiple, min(2**n, 8)
            layers += [
                nn.Conv2d(ndf * previous, ndf * multiple, 4, stride=2, padding=1, bias=bias),
                normalisation(ndf * multiple),
                nn.LeakyReLU(0.2, True),
            ]
        previous, multiple = multiple, min(2**n_layers, 8)
        layers += [
            nn.Conv2d(ndf * previous, ndf * multiple, 4, stride=1, padding=1, bias=bias),
            normalisation(ndf * multiple),
            nn.LeakyReLU(0.2, True),
            nn.Conv2d(ndf * multiple, 1, 4, stride=1, padding=1),
        ]
        self.model = nn.Sequential(*layers)
        if init == "normal":
            self.apply(_official_normal_init)

    def forward(self, images: Tensor | Sequence[Tensor]) -> list[Tensor]:
        """One ``B x 1 x h x w`` patch-logit map per image.

        ``images`` is a coarse-to-fine list of ``scales`` ``B x C x H x W`` images, all judged by the same layers,
        or a single tensor, judged as one scale.
        """
        if isinstance(images, Tensor):
            batch = [images]
        else:
            batch = list(images)
            if len(batch) != self.scales:
                raise ValueError(f"PatchGAN(scales={self.scales}) was given a list of {len(batch)} images")
        for index, image in enumerate(batch):
            if not isinstance(image, Tensor) or image.dim() != 4:
                shape = tuple(image.shape) if isinstance(image, Tensor) else type(image).__name__
                raise ValueError(f"PatchGAN takes B x C x H x W images; image {index} is {shape}")
        return [self.model(image) for image in batch]


def _official_normal_init(module: nn.Module) -> None:
    """The official ``init_weights(net, "normal", 0.02)`` for one module (applied with ``nn.Module.apply``)."""
    name = type(module).__name__
    if isinstance(getattr(module, "weight", None), Tensor) and ("Conv" in name or "Linear" in name):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.constant_(module.bias, 0.0)
    elif "BatchNorm2d" in name:
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.constant_(module.bias, 0.0)
