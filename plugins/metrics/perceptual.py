"""LPIPS through the ``lpips`` package, with the backbone's ImageNet weights read from a local file.

The ``lpips`` package ships only its linear calibration layers; it would let torchvision download
the AlexNet/VGG/SqueezeNet weights. Here the backbone is built randomly initialised (no download)
and its weights are loaded from a torchvision ``state_dict`` file: ``backbone_weights``, or the
torch hub cache where torchvision itself would have saved it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from deblurstack import DeblurstackError, Metric
from deblurstack.params import ExistingFile

#: torchvision's file name for the ImageNet weights of each LPIPS backbone
BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}

#: smallest H and W each backbone's pooling stages accept (AlexNet's stride-4 stem and two 3x3 max-pools)
MIN_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}


class MissingWeightsError(DeblurstackError):
    """The backbone weights LPIPS needs are not on this machine."""


def default_backbone_path(net: str) -> Path:
    """Where torchvision caches the backbone's weights: ``torch.hub.get_dir()/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / BACKBONE_FILES[net]


def backbone_state(trunk: torch.nn.Module, torchvision_state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Rename a torchvision state_dict (``features.<i>.*``) to lpips' trunk (``slice<k>.<i>.*``)."""
    renamed = {}
    for key in trunk.state_dict():
        source = "features." + key.split(".", 1)[1]
        if source not in torchvision_state:
            raise MissingWeightsError(f"{path} is not a torchvision state_dict of this backbone (no {source!r})")
        renamed[key] = torchvision_state[source]
    return renamed


class LPIPS(Metric):
    """LPIPS v0.1 (Zhang et al. 2018): learned perceptual distance, lower is better.

    Inputs are clamped to [0, 1] and scaled to [-1, 1] as ``lpips`` expects. The model always
    stays in eval mode (its linear layers contain dropout). Images must be at least 31 pixels a side
    for ``alex`` (16 for ``vgg``, 17 for ``squeeze``).

    Args:
        net: backbone: ``alex`` (the usual choice), ``vgg`` or ``squeeze``.
        backbone_weights: torchvision state_dict file of the backbone's ImageNet weights; None looks in
            the torch hub cache (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth`` for alex,
            ``vgg16-397923af.pth``, ``squeezenet1_1-b8a52dc0.pth``). Nothing is downloaded.
        pretrained_backbone: False keeps a randomly initialised backbone. This is NOT a real LPIPS and its
            numbers mean nothing; it exists for tests and for machines without the weights.
    """

    def __init__(
        self,
        net: Literal["alex", "vgg", "squeeze"] = "alex",
        backbone_weights: ExistingFile | None = None,
        pretrained_backbone: bool = True,
    ) -> None:
        super().__init__()
        path = Path(backbone_weights) if backbone_weights is not None else default_backbone_path(net)
        if pretrained_backbone and not path.is_file():  # also the hub cache, which no hint can name
            where = "backbone_weights file" if backbone_weights is not None else "torchvision's hub cache"
            raise MissingWeightsError(
                f"LPIPS ({net}) needs the ImageNet weights of its backbone and does not download them: "
                f"no {where} at {path}; put torchvision's {BACKBONE_FILES[net]} there or pass backbone_weights=PATH"
            )
        self.net = net
        import lpips

        with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            # pretrained=True: the calibrated linear layers shipped in the lpips package;
            # pnet_rand=True: a random backbone, so torchvision downloads nothing
            self.model = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, verbose=False)
        if pretrained_backbone:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.net.load_state_dict(backbone_state(self.model.net, state, path))
        self.model.requires_grad_(False)
        self.model.eval()
        weights = f"ImageNet weights from {path}" if pretrained_backbone else "a RANDOM backbone (not LPIPS)"
        self.protocol = (
            f"LPIPS v0.1 (lpips package), {net} backbone with {weights}, linear layers from the lpips package, "
            "inputs clamped to [0,1] and scaled to [-1,1], spatial mean"
        )

    def train(self, mode: bool = True) -> LPIPS:
        super().train(mode)
        self.model.eval()  # a metric: never enable the dropout of the linear layers
        return self

    def forward(self, output: Tensor, target: Tensor, **aux: Tensor) -> Tensor:
        if min(output.shape[-2:]) < MIN_SIZE[self.net]:
            raise ValueError(
                f"LPIPS ({self.net}) needs images of at least {MIN_SIZE[self.net]} pixels a side, "
                f"got {tuple(output.shape[-2:])}"
            )
        with torch.no_grad():
            return self.model(to_signed(output), to_signed(target)).flatten()


def to_signed(image: Tensor) -> Tensor:
    """[0, 1] (clamped) -> [-1, 1], the range lpips expects."""
    return image.detach().clamp(0, 1) * 2 - 1
