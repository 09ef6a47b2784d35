"""The ``kernel_wizard`` trainer: a KernelWizard learnt on known pairs, since the official weights are missing.

blur-kernel-space-exploring trains it with ``options/kernel_encoding/GOPRO/woVAE.yml`` and
``models/kernel_encoding/image_base_model.py``: on each pair (sharp ``x``, blurry ``y``) the network encodes the
blur of the pair and puts it back onto ``x``; the loss is Charbonnier between that and ``y`` (Adam 1e-4, betas
(0.9, 0.99), batch 16, 256 crops with flips and rotations, 600 k iterations, a cosine to 1e-8 restarting after
50 k, 150 k, 300 k and 450 k). ``examples/blur2blur/kernel_wizard.yaml`` is that recipe; its checkpoints hold
the network under the official key names, so ``known_blur: {type: kernel_wizard, weights: .../best.pth}`` reads
them as it reads ``GOPRO_woVAE.pth``.

Everything else is the supervised trainer's (EMA, clipping, AMP, validation, checkpoints, exact resume, torchrun):
only what is minimised and how validation pairs are read differ. Deliberate differences from the official code:
the Charbonnier loss is a mean over pixels where the official one sums them (Adam's steps are the same up to its
epsilon); validation scores the re-blurred image against the blurry one on the largest centred crop that
KernelWizard takes, where the official code validates nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field
from torch import Tensor, nn

from deblurstack import TrainingError, TrainingSplit
from deblurstack.compose import ComponentNode, ResolvedConfig, named_nodes
from deblurstack.engine.supervised import AdamBeta, SupervisedTrainer
from deblurstack.engine.training import TrainingJob
from deblurstack.plugins.blur2blur.kernel_wizard import MULTIPLE, KernelWizard, KernelWizardOptions, crop_problem


@dataclass(kw_only=True)
class KernelWizardTrainer(SupervisedTrainer):
    """Train a KernelWizard to re-synthesise each blurry image of ``data.train`` from its sharp image and its own
    blur code; validate likewise on ``data.<val_split>``. The config has no ``stack``.

    Args:
        network: the KernelWizard's shape (``nf``, ``front_blocks``, ``back_blocks``, ``kernel_dim``,
            ``extractor_blocks``; unset: ``GOPRO_woVAE``'s).
        losses: loss nodes between the re-blurred and the blurry image, each with its ``weight`` (official:
            Charbonnier).

    The other options are the supervised trainer's, with bkse's defaults: Adam, lr 1e-4, betas (0.9, 0.99),
    batch 16 (``scheduler: cosine_restarts`` with ``periods`` gives its restarts).
    """

    network: KernelWizardOptions = field(default_factory=dict)
    losses: tuple[ComponentNode("loss", options=("weight",)), ...] = (
        {"type": "charbonnier", "eps": 1e-3, "weight": 1.0},  # sqrt(d^2 + 1e-6): bkse's eps inside the root
    )
    batch_size: Annotated[int, Field(ge=1)] = 16
    optimizer: Literal["adamw", "adam"] = "adam"
    lr: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1e-4
    betas: tuple[AdamBeta, AdamBeta] = (0.9, 0.99)
    eta_min: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1e-8

    def build_model(self) -> nn.Module:
        return KernelWizard(**self.network)

    def training_splits(self) -> list[TrainingSplit]:
        return [TrainingSplit("train", "data.train", False, False, (), stack_forward=False)]

    def check_config(self, resolved: ResolvedConfig) -> list[tuple[str, str]]:
        problems = super().check_config(resolved)
        if self.network.get("use_vae"):
            problems.append(("train.network.use_vae", "training the VAE variant (bkse's KL term) is not supported"))
        if self.network.get("in_channels", 3) != 3:
            problems.append(("train.network.in_channels", "the pairs are RGB images: leave it at 3"))
        if self.val_tile is not None:
            problems.append(("train.val_tile", "KernelWizard is validated on whole centred crops: leave it unset"))
        for i, node in enumerate(named_nodes("loss", self.losses, "train.losses").values()):
            if needs := node.record.requires:
                problems.append(
                    (f"train.losses.{i}", f"reads {', '.join(needs)}, but a re-blurring loss gets only the two images")
                )
        dataset = resolved.datasets.get("train")
        if dataset is not None and (problem := crop_problem(dataset.params.get("patch_size"), self.network)):
            problems.append(("data.train.patch_size", problem))
        return problems

    def loss_step(self, job: TrainingJob) -> nn.Module:
        losses = {
            name: (float(node.options["weight"]), node.build().to(job.distributed.device))
            for name, node in named_nodes("loss", self.losses, "train.losses").items()
        }
        return ReblurringLoss(job.stack, losses)

    def validation_view(self, dataset: Any) -> Any:
        return Reblurring(dataset)


class ReblurringLoss(nn.Module):
    """``(total, terms)`` of a batch: each loss between ``network(target, input)`` and ``input`` (the blurry one)."""

    def __init__(self, network: nn.Module, losses: Mapping[str, tuple[float, nn.Module]]) -> None:
        super().__init__()
        self.network = network
        self.weights = {name: weight for name, (weight, _) in losses.items()}
        self.losses = nn.ModuleDict({name: loss for name, (_, loss) in losses.items()})

    def forward(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        reblurred = self.network(batch["target"], batch["input"])
        terms = {name: self.weights[name] * loss(reblurred, batch["input"]) for name, loss in self.losses.items()}
        return sum(terms.values()), terms


class Reblurring:
    """A paired dataset as KernelWizard is scored on it: ``input`` the sharp image, ``blurry`` (its keyword input)
    and ``target`` the blurry one, cropped at the centre to sides that are multiples of 128."""

    def __init__(self, pairs: Any) -> None:
        self.pairs = pairs
        self.skip_bad = getattr(pairs, "skip_bad", False)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample = self.pairs[index]
        height, width = sample["input"].shape[-2:]
        crop_height, crop_width = height // MULTIPLE * MULTIPLE, width // MULTIPLE * MULTIPLE
        if min(crop_height, crop_width) < 2 * MULTIPLE:
            raise TrainingError(
                f"validation image {sample['name']} is {height} x {width}: KernelWizard needs at least "
                f"{2 * MULTIPLE} x {2 * MULTIPLE}"
            )
        top, left = (height - crop_height) // 2, (width - crop_width) // 2
        window = (..., slice(top, top + crop_height), slice(left, left + crop_width))
        blurry = sample["input"][window]
        return {"name": sample["name"], "input": sample["target"][window], "target": blurry, "blurry": blurry}


__all__ = ["KernelWizardTrainer", "ReblurringLoss", "Reblurring"]
