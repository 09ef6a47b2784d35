"""Shared helpers: installed-like distributions on disk, and small real components for tests."""

from __future__ import annotations

import importlib
import os
import sys
import textwrap
from pathlib import Path

import pytest
import torch

# under pytest-xdist the workers share the cores: a worker and the processes it starts (which inherit the variable)
# use their share of them, the same number, so a result computed in a child equals the worker's bit for bit
if (workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))) and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"


def write_distribution(
    root: Path, name: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "1.0"
) -> Path:
    """Lay out an installed distribution as pip does: modules plus ``<name>-<version>.dist-info``
    with METADATA and entry_points.txt. Put ``root`` on sys.path to 'install' it."""
    for module, source in modules.items():
        path = root / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = root / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[deblurstack.plugins]\n{lines}")
    return root


@pytest.fixture
def installed(tmp_path, monkeypatch):
    """``installed(name, modules, entry_points)`` makes a distribution importable for this test."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    added: list[str] = []

    def install(name: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "1.0") -> Path:
        write_distribution(root, name, modules, entry_points, version)
        added.extend(modules)
        importlib.invalidate_caches()
        return root

    yield install
    for module in added:
        sys.modules.pop(module, None)


# ---------------------------------------------------------------------------------------------
# Small real components that exercise what the built-in plugins do not yet: priors with
# auxiliary inputs and guidance, a backbone without extra channels, translators, datasets.

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from deblurstack import (  # noqa: E402
    BackboneRecord,
    DatasetRecord,
    LossRecord,
    MaskSourceRecord,
    MetricRecord,
    Prior,
    PriorOutput,
    PriorRecord,
    Translator,
    TranslatorRecord,
    hookimpl,
)


class LabelMeanPrior(Prior):
    """Projects the image to ``channels`` features and replaces each by its mean over each label."""

    def __init__(self, channels: int = 2) -> None:
        super().__init__()
        self.out_channels = channels
        self.project = nn.Conv2d(3, channels, 3, padding=1)

    def forward(self, image, aux):
        features = self.project(image)
        labels = aux["masks"].long()
        batch, channels = features.shape[:2]
        count = int(labels.max()) + 1
        flat = (labels + count * torch.arange(batch).view(-1, 1, 1)).flatten()  # one id per (image, label)
        sums = torch.zeros(batch * count, channels).index_add_(
            0, flat, features.permute(0, 2, 3, 1).reshape(-1, channels)
        )
        sizes = torch.bincount(flat, minlength=batch * count).clamp(min=1).unsqueeze(1)
        means = (sums / sizes)[flat].view(batch, *labels.shape[1:], channels).permute(0, 3, 1, 2)
        return PriorOutput(channels=means)

    def claim_state_dict(self, state):
        """A monolithic model's file names this prior's weights ``pre_project.*``."""
        return {key: key.replace("pre_project.", "project.") for key in state if key.startswith("pre_project.")}


class LumaPrior(Prior):
    """The mean of the colour channels as one extra channel: a prior without parameters."""

    out_channels = 1

    def forward(self, image, aux):
        return PriorOutput(channels=image.mean(dim=1, keepdim=True))


class SpatialGatePrior(Prior):
    """Guidance: multiplies backbone features by a learned sigmoid gate; Dice-style loss to a blur mask."""

    def __init__(self, insertion_points: dict, points: list[str] = ("decoder_s1",), weight: float = 0.01) -> None:
        super().__init__()
        unknown = [p for p in points if p not in insertion_points]
        if unknown:
            raise ValueError(f"unknown insertion points {unknown}; the backbone has {sorted(insertion_points)}")
        self.weight = weight
        self.gates = nn.ModuleDict({p: nn.Conv2d(insertion_points[p], 1, 7, padding=3) for p in points})

    def forward(self, image, aux):
        output = PriorOutput()
        for point, conv in self.gates.items():

            def apply(features, conv=conv, point=point):
                gate = torch.sigmoid(conv(features))
                output.extras[point] = gate
                return features * gate

            output.guidance[point] = apply
        return output

    def aux_losses(self, output, batch):
        mask = batch["blur_mask"]
        losses = {}
        for point, gate in output.extras.items():
            target = nn.functional.interpolate(mask, size=gate.shape[-2:])
            losses[f"dice_{point}"] = self.weight * (1 - (gate * target).sum() / (gate + target).sum())
        return losses


class PlainNet(nn.Module):
    """A backbone that takes exactly three channels."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, image):
        return image + self.body(image)


class Pyramid(nn.Module):
    """A multi-scale backbone: residual outputs at 1/4, 1/2 and full size, coarse to fine."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__()
        self.heads = nn.ModuleList(nn.Conv2d(in_channels, 3, 3, padding=1) for _ in range(3))

    def forward(self, image):
        outputs = []
        for scale, head in zip((0.25, 0.5, 1.0), self.heads, strict=True):
            x = image if scale == 1 else nn.functional.interpolate(image, scale_factor=scale, mode="nearest")
            outputs.append(x[:, :3] + head(x))
        return outputs


class PooledNet(nn.Module):
    """Two levels with simplified channel attention (x * conv(global mean of x)): what TLC converts."""

    def __init__(self, in_channels: int = 3, width: int = 8) -> None:
        super().__init__()
        self.head = nn.Conv2d(in_channels, width, 3, padding=1)
        self.down = nn.Conv2d(width, width, 2, stride=2)
        self.attention = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, width, 1)) for _ in range(2)
        )
        self.up = nn.ConvTranspose2d(width, width, 2, stride=2)
        self.tail = nn.Conv2d(width, 3, 3, padding=1)
        self.pad_multiple = 2

    def forward(self, image):
        height, width = image.shape[-2:]
        x = nn.functional.pad(image, (0, width % 2, 0, height % 2))
        x = self.head(x)
        x = x * self.attention[0](x)
        y = self.down(x)
        y = y * self.attention[1](y)
        return image[:, :3] + self.tail(x + self.up(y))[..., :height, :width]


class NeedsDepth(PlainNet):
    def __init__(self, depth: int, width: int = 8) -> None:
        super().__init__(width)


class ColorShift(Translator):
    """A per-pixel residual colour transform."""

    def __init__(self) -> None:
        super().__init__()
        self.mix = nn.Conv2d(3, 3, 1)

    def forward(self, image):
        return image + self.mix(image)


class MultiScaleL1(nn.Module):
    def forward(self, prediction, target):
        self.received = len(prediction)
        return sum(
            (p - nn.functional.interpolate(target, size=p.shape[-2:], mode="bilinear")).abs().mean() for p in prediction
        ) / len(prediction)


class ExplodingL1(nn.Module):
    """L1 that turns into NaN after ``after`` calls (a diverging run)."""

    def __init__(self, after: int = 3) -> None:
        super().__init__()
        self.after, self.calls = after, 0

    def forward(self, prediction, target):
        self.calls += 1
        loss = (prediction - target).abs().mean()
        return loss * float("nan") if self.calls > self.after else loss


class Pairs:
    """Folder pairs (only the configuration matters here)."""

    def __init__(self, root: str, patch_size: int = 256, aux_sources: dict | None = None) -> None:
        self.root, self.patch_size, self.aux_sources = root, patch_size, aux_sources


class PairsWithMasks:
    """Pairs that bring their own blur masks and take no other auxiliary input."""

    def __init__(self, root: str) -> None:
        self.root = root


class BlockLabels:
    def __init__(self, block: int = 8) -> None:
        self.block = block

    def __call__(self, image, pair):
        height, width = image.shape[:2]
        rows = np.arange(height) // self.block
        cols = np.arange(width) // self.block
        return rows[:, None] * (width // self.block + 1) + cols[None, :]


class CountingLabels(BlockLabels):
    """Block labels that count how often they are computed."""

    calls = 0

    def __call__(self, image, pair):
        type(self).calls += 1
        return super().__call__(image, pair)


class MeanAbsoluteError:
    def __call__(self, output, target):
        return float((output - target).abs().mean())


class ComponentsForTests:
    """A plugin object registering the components above."""

    @hookimpl
    def deblurstack_priors(self):
        return [
            PriorRecord(
                name="label_mean",
                factory=LabelMeanPrior,
                summary="Mean of projected features per label",
                out_channels="channels",
                requires=("masks",),
            ),
            PriorRecord(name="luma", factory=LumaPrior, summary="Channel mean", out_channels=1),
            PriorRecord(
                name="spatial_gate",
                factory=SpatialGatePrior,
                summary="Sigmoid gates on decoder features",
                guidance=True,
                training_inputs=("blur_mask",),
            ),
        ]

    @hookimpl
    def deblurstack_backbones(self):
        return [
            BackboneRecord(
                name="plain", factory=PlainNet, summary="Three channels in, three out", extra_channels=False
            ),
            BackboneRecord(name="pyramid", factory=Pyramid, summary="Three output scales", multiscale=True),
            BackboneRecord(name="pooled", factory=PooledNet, summary="Channel attention by global pooling", tlc=True),
            BackboneRecord(
                name="needs_depth", factory=NeedsDepth, summary="Has a required parameter", extra_channels=False
            ),
        ]

    @hookimpl
    def deblurstack_translators(self):
        return [TranslatorRecord(name="color_shift", factory=ColorShift, summary="Residual 1x1 colour transform")]

    @hookimpl
    def deblurstack_losses(self):
        return [
            LossRecord(name="multiscale_l1", factory=MultiScaleL1, summary="L1 over every scale", multiscale=True),
            LossRecord(name="exploding_l1", factory=ExplodingL1, summary="L1, then NaN"),
        ]

    @hookimpl
    def deblurstack_datasets(self):
        return [
            DatasetRecord(name="pairs", factory=Pairs, summary="Blurry/sharp folder pairs"),
            DatasetRecord(
                name="local_pairs", factory=PairsWithMasks, summary="Pairs with blur masks", provides=("blur_mask",)
            ),
        ]

    @hookimpl
    def deblurstack_mask_sources(self):
        return [
            MaskSourceRecord(name="blocks", factory=BlockLabels, summary="Square blocks as segments"),
            MaskSourceRecord(name="counting_blocks", factory=CountingLabels, summary="Blocks, counted"),
        ]

    @hookimpl
    def deblurstack_metrics(self):
        return [
            MetricRecord(name="mae", factory=MeanAbsoluteError, summary="Mean absolute error", higher_is_better=False)
        ]


@pytest.fixture
def test_components(register_plugin):
    """The components above, registered into the process-wide manager for one test."""
    register_plugin(ComponentsForTests(), name="test_components")
