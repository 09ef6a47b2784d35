"""Iteration-based supervised training, as BasicSR/NAFNet train: one optimizer over every trainable
parameter, a per-iteration learning-rate schedule, gradient-norm clipping, optional EMA and AMP,
validation and checkpoints every so many iterations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deblurstack import TrainingError
from deblurstack.engine.loop import LoopOptions, TrainingLoop
from deblurstack.engine.training import LossStep, TrainingJob


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
        scheduler: ``cosine`` (to ``eta_min`` over all iterations), ``multistep`` or ``constant``; stepped
            every iteration.
        eta_min: final learning rate of the cosine schedule.
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
    betas: tuple[Annotated[float, Field(ge=0.0, lt=1.0)], Annotated[float, Field(ge=0.0, lt=1.0)]] = (0.9, 0.999)
    weight_decay: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 0.0
    scheduler: Literal["cosine", "multistep", "constant"] = "cosine"
    eta_min: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] = 1e-7
    milestones: tuple[Annotated[int, Field(ge=1)], ...] = ()
    gamma: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 0.5
    grad_clip: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None
    amp: bool = False
    find_unused_parameters: bool = False

    def optimizer_for(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        return make_optimizer(self.optimizer, parameters, self.lr, self.betas, self.weight_decay)

    def scheduler_for(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        return make_scheduler(self.scheduler, optimizer, self.iterations, self.eta_min, self.milestones, self.gamma)

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
        model: nn.Module = LossStep(stack)
        if distributed.enabled:
            model = DistributedDataParallel(model, find_unused_parameters=self.find_unused_parameters)
        state = {"optimizer": optimizer, "scheduler": scheduler, "scaler": scaler}
        with TrainingLoop(job, self, state) as loop:
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
) -> torch.optim.lr_scheduler.LRScheduler:
    """``cosine`` to ``eta_min`` over ``total`` steps, ``multistep`` (x ``gamma`` at ``milestones``) or ``constant``."""
    if kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total, eta_min=eta_min)
    if kind == "multistep":
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(milestones), gamma=gamma)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
