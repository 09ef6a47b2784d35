"""Iteration-based supervised training, as BasicSR/NAFNet train: one optimizer over every trainable
parameter, a per-iteration learning-rate schedule, gradient-norm clipping, optional EMA and AMP,
validation and checkpoints every so many iterations.

The ``supervised`` trainer (registered by the built-in ``trainers`` plugin) and the base of a trainer that differs
only in what it minimises: override :meth:`SupervisedTrainer.loss_step` (and :meth:`~SupervisedTrainer.validation_view`
where the model reads the pairs otherwise), as Blur2Blur's ``kernel_wizard`` trainer does. ``make_optimizer`` and
``make_scheduler`` build what the options name, for trainers with several optimizers (``phased``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deblurstack import TrainingError
from deblurstack.compose import ResolvedConfig
from deblurstack.engine.loop import LoopOptions, TrainingLoop
from deblurstack.engine.training import LossStep, TrainingJob

AdamBeta = Annotated[float, Field(ge=0.0, lt=1.0)]
"""One of Adam's two betas, as a trainer's options declare them: ``betas: tuple[AdamBeta, AdamBeta]``."""


@dataclass(kw_only=True)
class SupervisedTrainer(LoopOptions):
    """Minimise the stack's weighted losses on ``data.train``; validate on ``data.<val_split>``.

    Args:
        batch_size: samples per step on each process (the global batch is this times the processes).
        num_workers: data-loading processes per training process.
        optimizer: ``adamw`` or ``adam``.
        lr: initial learning rate.
        betas: Adam's betas (NAFNet uses 0.9, 0.9).
        weight_decay: decoupled for AdamW, L2 for Adam.
        scheduler: ``cosine`` (to ``eta_min`` over all iterations), ``cosine_restarts`` (a cosine to ``eta_min``
            over each of ``periods``, restarting at ``lr``: EDVR's and bkse's ``CosineAnnealingLR_Restart``),
            ``multistep`` or ``constant``; stepped every iteration.
        eta_min: final learning rate of the cosine schedules.
        periods: the lengths of ``cosine_restarts``'s cosines, adding up to ``iterations``.
        milestones: iterations where ``multistep`` multiplies the learning rate by ``gamma``.
        gamma: factor of the ``multistep`` schedule.
        grad_clip: maximum global gradient norm (NAFNet: 0.01); unset for none.
        amp: mixed precision: float16 with loss scaling on CUDA, bfloat16 on CPU.
        find_unused_parameters: let DDP tolerate parameters that get no gradient in a step.
    """

    batch_size: Annotated[int, Field(ge=1)] = 8
    num_workers: Annotated[int, Field(ge=0)] = 0
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1e-3
    betas: tuple[AdamBeta, AdamBeta] = (0.9, 0.999)
    weight_decay: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    scheduler: Literal["cosine", "cosine_restarts", "multistep", "constant"] = "cosine"
    eta_min: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1e-7
    periods: tuple[Annotated[int, Field(ge=1)], ...] = ()
    milestones: tuple[Annotated[int, Field(ge=1)], ...] = ()
    gamma: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 0.5
    grad_clip: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    amp: bool = False
    find_unused_parameters: bool = False

    def optimizer_for(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, parameters, self.lr, self.betas, self.weight_decay)

    def scheduler_for(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return make_scheduler(
            self.scheduler, optimizer, self.iterations, self.eta_min, self.milestones, self.gamma, self.periods
        )

    def check_config(self, resolved: ResolvedConfig) -> list[tuple[str, str]]:
        if self.scheduler == "cosine_restarts" and sum(self.periods) != self.iterations:
            return [
                (
                    "train.periods",
                    f"add up to {sum(self.periods)}, but scheduler cosine_restarts needs them to add up to "
                    f"iterations ({self.iterations})",
                )
            ]
        return []

    def loss_step(self, job: TrainingJob) -> nn.Module:
        """The module whose forward gives a batch's ``(total, terms)`` (what DDP wraps): the stack's losses."""
        return LossStep(job.stack)

    def validation_view(self, dataset: Any) -> Any:
        """The validation samples as the trained model is scored on them (see :class:`TrainingLoop`)."""
        return dataset

    def fit(self, job: TrainingJob) -> None:
        stack, distributed = job.stack, job.distributed
        device = distributed.device
        parameters = [p for p in stack.parameters() if p.requires_grad]
        if not parameters:
            raise TrainingError("nothing to train: every part of the stack is frozen")
        optimizer = self.optimizer_for(parameters)
        scheduler = self.scheduler_for(optimizer)
        scaler = torch.amp.GradScaler(device.type, enabled=self.amp and device.type == "cuda")
        autocast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        model = self.loss_step(job)
        state = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        with TrainingLoop(job, self, state, view=self.validation_view) as loop:
            if distributed.enabled:  # after the loop has put the weights in their layout (channels_last)
                model = DistributedDataParallel(model, find_unused_parameters=self.find_unused_parameters)
            for batch in loop.batches(job.dataset("train"), self.batch_size, self.num_workers):
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=self.amp):
                    total, terms = model(batch)
                loop.check_finite(total, terms)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if self.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                logs = {"loss": total.item(), **{f"loss/{k}": v.item() for k, v in terms.items()}}
                loop.step_done({**logs, "lr": scheduler.get_last_lr()[0]})


def make_optimizer(
    kind: str, parameters: list[nn.Parameter], lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.Optimizer:
    """``adamw`` (decoupled weight decay) or ``adam`` (L2) over ``parameters``."""
    optimizer = torch.optim.AdamW if kind == "adamw" else torch.optim.Adam
    return optimizer(parameters, lr=lr, betas=betas, weight_decay=weight_decay)


def make_scheduler(
    kind: str,
    optimizer: torch.optim.Optimizer,
    total: int,
    eta_min: float,
    milestones: tuple[int, ...],
    gamma: float,
    periods: tuple[int, ...] = (),
) -> torch.optim.lr_scheduler.LRScheduler:
    """``cosine`` to ``eta_min`` over ``total`` steps, ``cosine_restarts`` (one cosine per period of ``periods``),
    ``multistep`` (x ``gamma`` at ``milestones``) or ``constant``."""
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=eta_min)
    if kind == "cosine_restarts":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(_cosine_restarts, periods, optimizer, eta_min))
    if kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _cosine_restarts(periods: tuple[int, ...], optimizer: torch.optim.Optimizer, eta_min: float, step: int) -> float:
    """The factor of the initial rate at ``step``: within each period, a cosine from 1 to ``eta_min / lr``."""
    lr = optimizer.param_groups[0]["initial_lr"]
    for period in periods:
        if step < period:
            return (eta_min + (lr - eta_min) * (1 + math.cos(math.pi * step / period)) / 2) / lr
        step -= period
    return eta_min / lr


__all__ = ["AdamBeta", "SupervisedTrainer", "make_optimizer", "make_scheduler"]
