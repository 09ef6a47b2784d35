"""What a trainer is given, and how ``deblurstack train`` builds it.

A trainer plugin's factory takes its YAML parameters and returns an object with
``fit(job: TrainingJob) -> None``. The job holds the built stack, the run folder, the datasets
and metrics on demand, the process's place under torchrun, and where to resume from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from deblurstack.checkpoint import load_state
from deblurstack.compose import ResolvedConfig, resolve_config
from deblurstack.data import TrainingSampler
from deblurstack.engine import distributed as dist_utils
from deblurstack.engine.checkpoints import Checkpoints, load_training_state, seed_global_generators
from deblurstack.engine.distributed import Distributed
from deblurstack.engine.evaluation import NamedMetric
from deblurstack.engine.runs import RunFolder, run_folder_of
from deblurstack.errors import ConfigError
from deblurstack.registry import PluginManager, get_plugin_manager
from deblurstack.run import RunState


@dataclass
class TrainingJob:
    """Everything a trainer needs; datasets and metrics are built when asked for.

    ``stack`` is what the trainer trains: the config's stack, or the trainer's own network where its record says
    ``trains_stack=False``.
    """

    resolved: ResolvedConfig
    stack: nn.Module
    run: RunFolder
    manager: PluginManager
    distributed: Distributed
    seed: int = 0
    resume_from: Path | None = None
    #: the checkpoint at ``resume_from`` as :func:`prepare_training` read it (its params checked against the stack),
    #: so the loop does not read the file again; the loop drops it once resumed
    resume_state: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def config(self) -> dict[str, Any]:
        return self.resolved.data

    def has_split(self, split: str) -> bool:
        return split in self.resolved.datasets

    def dataset(self, split: str) -> Any:
        return self.resolved.build_dataset(split)

    def metrics(self) -> list[NamedMetric]:
        metrics = self.resolved.build_metrics()
        for metric in metrics:
            metric.module.to(self.distributed.device)
        return metrics

    def state(self, model: nn.Module, step: int) -> RunState:
        """The run as lifecycle hooks see it."""
        return RunState(self.run.directory, self.config, model, step, self.distributed.rank)

    def emit(self, hook: str, **kwargs: Any) -> None:
        """Call a lifecycle hook (``deblurstack_run_start`` ...) on every plugin implementing it."""
        getattr(self.manager.hook, hook)(**kwargs)


class LossStep(nn.Module):
    """The stack's total loss on a batch as one forward call (what DDP wraps).

    ``stack_losses``/``prior_losses``: which terms count (see :meth:`deblurstack.Stack.compute_loss`).
    """

    def __init__(self, stack: nn.Module, stack_losses: bool = True, prior_losses: bool = True) -> None:
        super().__init__()
        self.stack = stack
        self.stack_losses, self.prior_losses = stack_losses, prior_losses

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        aux = {k: v for k, v in batch.items() if k not in ("name", "input", "target")}
        output = self.stack.run(batch["input"], aux)
        return self.stack.compute_loss(output, batch, stack_losses=self.stack_losses, prior_losses=self.prior_losses)


def training_loader(
    dataset: Any, batch_size: int, num_workers: int, seed: int, distributed: Distributed, start_step: int = 0
) -> DataLoader:
    """Endless batches; after ``start_step`` steps it continues exactly where such a run stood.

    The loader draws its workers' base seed from a generator of its own: from torch's global one, each new
    iterator would shift the stream that a resumed run has just restored.
    """
    sampler = TrainingSampler(len(dataset), seed, distributed.rank, distributed.world_size, start_step * batch_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=distributed.device.type == "cuda",
        drop_last=True,
        generator=torch.Generator().manual_seed(seed + start_step),
    )


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def prepare_training(
    config: str | Path,
    overrides: Sequence[str] = (),
    runs_dir: str | Path = "runs",
    resume: str | None = None,
    device: str = "auto",
    command: str = "",
    variant: str | None = None,
) -> tuple[TrainingJob, Any]:
    """Resolve the config, join torchrun's process group, build the stack and the run folder.

    ``resume``: ``None`` starts a new run; ``"latest"`` continues the run named in the config from
    its newest checkpoint; a path continues from that checkpoint. ``command`` is recorded in the run folder;
    ``variant`` picks one of the config's variants.
    """
    resolved = resolve_config(config, overrides, variant=variant)
    trainer = resolved.build_trainer()
    distributed = dist_utils.setup(device)
    seed = int(resolved.data.get("seed", 0))
    name = resolved.data.get("name") or Path(str(config)).stem
    seed_global_generators(seed)  # the same initial weights on every rank, and reproducible plugins
    stack = resolved.build_model().to(distributed.device)
    manager = get_plugin_manager()
    plugins = {info.name: info.distribution for info in manager.plugin_infos()}
    resume_from, resume_state, directory = None, None, None
    if resume == "latest":
        directory = Path(runs_dir) / name
        resume_from = Checkpoints(directory / "checkpoints").latest()
        if resume_from is None:
            raise ConfigError(f"--resume: no checkpoint in {directory / 'checkpoints'}")
    elif resume is not None:
        resume_from = Path(resume)
        directory = run_folder_of(resume_from) or Path(runs_dir) / name
    if resume_from is not None:  # one that cannot resume this stack is refused before the run folder records it
        resume_state = load_training_state(resume_from)
        load_state(stack, resume_state["params"], source=f"{resume_from} [params]")
    if distributed.is_main:
        run = RunFolder.create(runs_dir, name, resolved.data, plugins, directory=directory, command=command)
        directory = run.directory
    directory = dist_utils.gather(directory, distributed)[0]  # rank 0 chose the folder; every rank uses it
    run = RunFolder(directory, writable=distributed.is_main)
    job = TrainingJob(resolved, stack, run, manager, distributed, seed, resume_from, resume_state)
    return job, trainer


__all__ = [
    "LossStep",
    "TrainingJob",
    "prepare_training",
    "to_device",
    "training_loader",
]
