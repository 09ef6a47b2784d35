"""Training in phases, each with its own data, trained parts, losses and optimizer (BladeNet's schedule).

BladeNet alternates two phases per epoch (``train.py`` of komejisatori/BladeNet): one pass over global-blur
data minimising L1 with an Adam over the deblurring net only, then one pass over local-blur-synthesis data
minimising L1 + cross-entropy + Dice with a second Adam over every parameter (two Adam states for the shared
parameters, each with its own MultiStep schedule stepped per epoch). The paper trains in stages instead
(LBP alone, then BSA, then jointly). Both are a list of phases, run in order ``cycles`` times (BladeNet:
400 cycles of its two one-epoch phases; the stages: one cycle).

A phase trains only the parts it names: the others get ``requires_grad = False`` for its steps, so their
parameters stay bit-identical (their BatchNorm statistics still update in training mode, as in the
official code). Resuming is exact: the phase and each phase's position in its data follow from the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from deblurstack import TrainingError, TrainingSplit
from deblurstack.engine.loop import LoopOptions, TrainingLoop
from deblurstack.engine.supervised import AdamBeta, make_optimizer, make_scheduler
from deblurstack.engine.training import LossStep, TrainingJob

Rate = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]


class Phase(BaseModel):
    """One phase of a phased schedule.

    Args:
        name: names the phase in logs, the progress bar and the checkpoint (``optimizer.<name>``).
        split: the data split it trains on.
        iterations: its length in steps; or
        epochs: its length in passes over ``split`` (``len // global batch`` steps each).
        trains: the parts it trains: ``all``, ``backbone``, ``translator``, ``priors.<i>``.
        stack_losses: minimise the stack's ``losses``.
        prior_losses: minimise the priors' auxiliary losses (they read the split's ``blur_mask``, say).
        batch_size: samples per step on each process.
        optimizer, lr, betas, weight_decay: its own optimizer (``adam`` or ``adamw``).
        scheduler: ``constant``, ``multistep`` or ``cosine``, stepped every step of the phase, or every pass
            when the phase is measured in ``epochs`` (milestones are then in passes, as BladeNet's).
        milestones, gamma, eta_min: of the schedule.
        grad_clip: maximum global gradient norm; unset for none.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]+$")]
    split: str
    iterations: Annotated[int, Field(ge=1)] | None = None
    epochs: Annotated[int, Field(ge=1)] | None = None
    trains: tuple[str, ...] = ("all",)
    stack_losses: bool = True
    prior_losses: bool = True
    batch_size: Annotated[int, Field(ge=1)] = 8
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 1e-3
    betas: tuple[AdamBeta, AdamBeta] = (0.9, 0.999)
    weight_decay: Rate = 0.0
    scheduler: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: tuple[Annotated[int, Field(ge=1)], ...] = ()
    gamma: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] = 0.5
    eta_min: Rate = 0.0
    grad_clip: Annotated[float, Field(gt=0.0, allow_inf_nan=False)] | None = None

    @model_validator(mode="after")
    def _one_length_and_a_loss(self) -> Phase:
        if (self.iterations is None) == (self.epochs is None):
            raise ValueError(f"phase {self.name!r}: give its length as iterations or as epochs (one of them)")
        if not (self.stack_losses or self.prior_losses):
            raise ValueError(f"phase {self.name!r} minimises nothing: stack_losses and prior_losses are both false")
        if not self.trains:
            raise ValueError(f"phase {self.name!r} trains nothing: name parts under trains (or all)")
        return self


@dataclass(kw_only=True)
class PhasedTrainer(LoopOptions):
    """Run ``phases`` in order, ``cycles`` times (or until ``iterations`` steps, if that comes first).

    Args:
        phases: the phases (see :class:`Phase`).
        cycles: how many times the phases run, in order (BladeNet's alternation: one cycle per epoch).
        iterations: stop after this many steps in total; unset: after the last cycle.
        num_workers: data-loading processes per training process.
        find_unused_parameters: let DDP tolerate parameters that get no gradient in a step.
    """

    phases: Annotated[tuple[Phase, ...], Field(min_length=1)]
    cycles: Annotated[int, Field(ge=1)] = 1
    iterations: Annotated[int, Field(ge=1)] | None = None  # type: ignore[assignment]
    num_workers: Annotated[int, Field(ge=0)] = 0
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        names = [phase.name for phase in self.phases]
        if len(set(names)) != len(names):
            raise ValueError(f"phase names must differ, got {names}")

    def training_splits(self) -> list[TrainingSplit]:
        return [
            TrainingSplit(
                p.split,
                f"train.phases.{i}.split",
                p.stack_losses,
                p.prior_losses,
                p.trains,
                trains_keypath=f"train.phases.{i}.trains",
            )
            for i, p in enumerate(self.phases)
        ]

    # ------------------------------------------------------------------ the schedule

    def phase_at(self, step: int, lengths: list[int]) -> tuple[int, int]:
        """The phase that makes step ``step + 1`` and how many steps that phase has made before it."""
        cycles, offset = divmod(step, sum(lengths))
        for index, length in enumerate(lengths):
            if offset < length:
                return index, cycles * length + offset
            offset -= length
        raise AssertionError("unreachable: offset < sum(lengths)")

    def steps_made(self, index: int, step: int, lengths: list[int]) -> int:
        """Steps phase ``index`` has made in the first ``step`` steps of the run."""
        cycles, offset = divmod(step, sum(lengths))
        start = sum(lengths[:index])
        return cycles * lengths[index] + min(max(offset - start, 0), lengths[index])

    # ------------------------------------------------------------------ training

    def fit(self, job: TrainingJob) -> None:
        stack, distributed = job.stack, job.distributed
        datasets = {split: job.dataset(split) for split in dict.fromkeys(p.split for p in self.phases)}
        passes = [self._steps_per_pass(p, len(datasets[p.split]), distributed.world_size) for p in self.phases]
        lengths = [p.iterations or p.epochs * per_pass for p, per_pass in zip(self.phases, passes, strict=True)]
        if self.iterations is None:
            self.iterations = self.cycles * sum(lengths)
        elif self.iterations > self.cycles * sum(lengths):
            raise TrainingError(
                f"train.iterations is {self.iterations}, but {self.cycles} cycle(s) of the phases make "
                f"{self.cycles * sum(lengths)} steps: raise train.cycles"
            )
        trainable = [p for p in stack.parameters() if p.requires_grad]
        selected = [self._parameters(stack, i, phase) for i, phase in enumerate(self.phases)]
        optimizers, schedulers, state = [], [], {}
        for index, (phase, parameters) in enumerate(zip(self.phases, selected, strict=True)):
            optimizer = make_optimizer(phase.optimizer, parameters, phase.lr, phase.betas, phase.weight_decay)
            units = self.steps_made(index, self.iterations, lengths) // (passes[index] if phase.epochs else 1)
            scheduler = make_scheduler(
                phase.scheduler, optimizer, max(units, 1), phase.eta_min, phase.milestones, phase.gamma
            )
            optimizers.append(optimizer)
            schedulers.append(scheduler)
            state |= {f"optimizer.{phase.name}": optimizer, f"scheduler.{phase.name}": scheduler}
        models: dict[int, nn.Module] = {}
        streams: dict[int, Any] = {}
        try:
            with TrainingLoop(job, self, state) as loop:
                name = job.run.directory.name
                while loop.step < self.iterations:
                    index, made = self.phase_at(loop.step, lengths)
                    phase = self.phases[index]
                    chosen = {id(p) for p in selected[index]}
                    for parameter in trainable:
                        parameter.requires_grad_(id(parameter) in chosen)
                    if index not in models:
                        models[index] = LossStep(stack, phase.stack_losses, phase.prior_losses)
                        if distributed.enabled:
                            models[index] = DistributedDataParallel(
                                models[index], find_unused_parameters=self.find_unused_parameters
                            )
                    if index not in streams:
                        streams[index] = loop.batches(
                            datasets[phase.split],
                            phase.batch_size,
                            self.num_workers,
                            start=self.steps_made(index, loop.step, lengths),
                            seed=job.seed + index,
                        )
                    loop.progress.set_description(f"{name} [{phase.name}]", refresh=False)
                    total, terms = models[index](next(streams[index]))
                    loop.check_finite(total, terms)
                    optimizer, scheduler = optimizers[index], schedulers[index]
                    optimizer.zero_grad(set_to_none=True)
                    total.backward()
                    if phase.grad_clip:
                        torch.nn.utils.clip_grad_norm_(selected[index], phase.grad_clip)
                    optimizer.step()
                    if not phase.epochs or (made + 1) % passes[index] == 0:
                        scheduler.step()
                    logs = {"loss": total.item(), **{f"loss/{k}": v.item() for k, v in terms.items()}}
                    loop.step_done({**logs, "lr": scheduler.get_last_lr()[0], "phase": float(index)})
        finally:
            for parameter in trainable:
                parameter.requires_grad_(True)

    def _steps_per_pass(self, phase: Phase, samples: int, world_size: int) -> int:
        steps = samples // (phase.batch_size * world_size)
        if phase.epochs and steps == 0:
            raise TrainingError(
                f"phase {phase.name!r}: data.{phase.split} has {samples} samples, fewer than one global batch "
                f"of {phase.batch_size * world_size}: an epoch would have no step"
            )
        return max(steps, 1)

    def _parameters(self, stack: nn.Module, index: int, phase: Phase) -> list[nn.Parameter]:
        parts = [stack] if "all" in phase.trains else [stack.get_submodule(part) for part in phase.trains]
        seen: dict[int, nn.Parameter] = {}
        for part in parts:
            seen |= {id(p): p for p in part.parameters() if p.requires_grad}
        if not seen:
            raise TrainingError(f"train.phases.{index}.trains: {', '.join(phase.trains)} has nothing to train")
        return list(seen.values())


__all__ = ["Phase", "PhasedTrainer"]
