"""What every iteration-based trainer shares, so that a trainer writes only its optimisation step.

The trainer contract: a trainer plugin's factory takes its YAML parameters and returns an object with
``fit(job: TrainingJob) -> None``. ``fit`` trains ``job.stack`` in place for the configured number of steps and
must, on the main process (``job.distributed.is_main``), leave in ``job.run.checkpoints`` a checkpoint that
resumes the run exactly; it calls the lifecycle hooks (``deblurstack_run_start``, ``_train_step_end``,
``_validation_end``, ``_run_end``) and resumes from ``job.resume_from`` when that is set. :class:`TrainingLoop`
does all of that except the step itself; the ``deblurstack_trainers`` hook spec (``deblurstack.hookspecs``) has a
complete trainer built on it, which the tests install and resume.

The loop saves and restores the weights (and their EMA), every object in ``state`` (optimizers, schedulers, AMP
scalers, discriminators: anything with ``state_dict``/``load_state_dict``), the step, the best validation score,
the global random states and the generator of every :class:`~deblurstack.Stochastic` module of the stack. It
removes what a killed run left (partial checkpoint writes, ``metrics.csv`` rows after the checkpoint), validates
and saves when due, keeps ``best.pth``, logs, shows progress and writes TensorBoard scalars.

**Why resumed runs are bit-identical.** A training sample depends only on its key ``(index, seed, epoch)``, and
:meth:`TrainingLoop.batches` starts the key stream at the resumed step. Nothing draws from torch's global generator
between restoring it and the first step: the data loader draws its base seed from a generator of its own, and
validation runs on forked random states. Stochastic modules draw from their own generators.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from deblurstack.checkpoint import load_state
from deblurstack.engine.checkpoints import (
    Checkpoints,
    load_training_state,
    restore_rng_state,
    rng_state,
    seed_generators,
    stochastic_modules,
)
from deblurstack.engine.distributed import all_true
from deblurstack.engine.evaluation import evaluate
from deblurstack.engine.training import TrainingJob, to_device, training_loader
from deblurstack.errors import CheckpointError, TrainingError
from deblurstack.params import MetricName, SplitName


@dataclass(kw_only=True)
class LoopOptions:
    """The options of every trainer built on :class:`TrainingLoop`.

    Args:
        iterations: optimizer steps in total.
        ema_decay: decay of an exponential moving average of the weights, used for validation and saved
            as ``params_ema``; 0 turns it off.
        val_split: the data split validated on; unset: ``val`` if the config has one, else no validation.
        val_every: validate every so many iterations (and at the end); 0 only at the end.
        val_tile: validate whole images in overlapping tiles of this size; unset for whole images.
        best_metric: metric (column) that picks ``best.pth``; default: the first metric.
        save_every: write a checkpoint every so many iterations (and at the end); 0 only at the end.
        keep_last: step checkpoints kept on disk (``best.pth`` is kept besides).
        log_every: write a line to train.log every so many iterations.
        grid_samples: validation images shown in the image grids.
        tensorboard: also write losses, learning rate, validation metrics and images for TensorBoard
            to ``<run>/tensorboard`` (needs the ``tensorboard`` package: ``pip install 'deblurstack[tensorboard]'``).
        deterministic: use only deterministic algorithms (needed for bit-identical resumes on GPU).
        channels_last: train with the weights and image batches in channels-last memory layout, in which oneDNN's
            and cuDNN's convolutions are often faster (``benchmarks/train_step_overhead.py --channels-last``);
            results differ from the default layout's by float rounding.
    """

    iterations: Annotated[int, Field(ge=1)]
    ema_decay: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    val_split: SplitName | None = None
    val_every: Annotated[int, Field(ge=0)] = 0
    val_tile: Annotated[int, Field(ge=16)] | None = None
    best_metric: MetricName | None = None
    save_every: Annotated[int, Field(ge=0)] = 0
    keep_last: Annotated[int, Field(ge=1)] = 3
    log_every: Annotated[int, Field(ge=1)] = 100
    grid_samples: Annotated[int, Field(ge=0)] = 4
    tensorboard: bool = False
    deterministic: bool = False
    channels_last: bool = False

    def due(self, every: int, step: int) -> bool:
        """Whether something done ``every`` steps (0: only at the end) is due after ``step``."""
        return step == self.iterations or (every > 0 and step % every == 0)


class TrainingLoop:
    """Resuming, checkpoints, validation, hooks, logging and progress around a trainer's own steps.

    Use it as a context manager (it calls ``deblurstack_run_start`` on entry and ``deblurstack_run_end`` with
    the run's status on exit); iterate :meth:`batches`; call :meth:`step_done` after each optimizer step.
    ``state`` names the objects saved besides the weights, under those names in the checkpoint. ``view`` maps the
    validation dataset to the samples the model is scored on (``input`` in, ``target`` out, the rest its keyword
    inputs), for a model that reads the pairs otherwise than a stack (KernelWizard: the sharp image in, the blurry
    one out).
    """

    def __init__(
        self,
        job: TrainingJob,
        options: LoopOptions,
        state: Mapping[str, Any] = (),
        view: Callable[[Any], Any] | None = None,
    ) -> None:
        self.job, self.options = job, options
        self.stack: nn.Module = job.stack
        self.state = dict(state)
        if options.channels_last:  # in place: the optimizers keep their parameters, their state follows the layout
            for module in (self.stack, *(item for item in self.state.values() if isinstance(item, nn.Module))):
                module.to(memory_format=torch.channels_last)
        self.device = job.distributed.device
        self.step = 0
        self.best: dict[str, Any] | None = None
        self.ema = (
            AveragedModel(self.stack, multi_avg_fn=get_ema_multi_avg_fn(options.ema_decay), use_buffers=True)
            if options.ema_decay
            else None
        )
        self.checkpoints = Checkpoints(job.run.checkpoints, options.keep_last)
        self.metrics = job.metrics()
        split = options.val_split or "val"
        self.val_split = split if job.has_split(split) and self.metrics else None
        self.validation = job.dataset(split) if self.val_split else None
        if view is not None and self.validation is not None:
            self.validation = view(self.validation)
        self.board: Any = None
        self.progress: Any = None
        self.started, self.first_step = 0.0, 0

    # ------------------------------------------------------------------ start and end

    def __enter__(self) -> TrainingLoop:
        job, run = self.job, self.job.run
        if self.options.deterministic:
            torch.use_deterministic_algorithms(True)
        if job.distributed.is_main:
            for partial in self.checkpoints.remove_partial_writes():
                run.log(f"removed {partial.name}, left by a checkpoint write that did not finish")
        seed_generators(self.stack, job.seed, job.distributed.rank)
        if job.resume_from is not None:
            self.resume(job.resume_from, job.resume_state)
            job.resume_state = None  # the weights and optimizers hold it now: no second copy for the whole run
        if self.options.tensorboard and job.distributed.is_main:
            self.board = _tensorboard(run.directory / "tensorboard")
        job.emit("deblurstack_run_start", run=job.state(self.stack, self.step))
        # tqdm takes the lowest free position: 0 for a plain run, the line below an ablation's bar in a study;
        # leave=None keeps the finished bar at position 0 only, so a study's bar does not move
        self.progress = tqdm(
            total=self.options.iterations,
            leave=None,
            initial=self.step,
            desc=run.directory.name,
            disable=not job.distributed.is_main,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        self.started, self.first_step = time.perf_counter(), self.step  # tqdm keeps no state when it is disabled
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        status = "completed" if kind is None else "interrupted" if kind is KeyboardInterrupt else "failed"
        self.progress.close()
        if self.board is not None:
            self.board.close()
        self.job.emit("deblurstack_run_end", run=self.job.state(self.stack, self.step), status=status)
        self.job.run.log(f"run {status} at step {self.step}")

    def resume(self, path: Any, checkpoint: dict[str, Any] | None = None) -> None:
        """Continue from a checkpoint: weights, state objects, step, best score, every random state. ``checkpoint``:
        the contents of ``path`` when already read."""
        checkpoint = load_training_state(path) if checkpoint is None else checkpoint
        load_state(self.stack, checkpoint["params"], source=f"{path} [params]")
        absent = [name for name in self.state if name not in checkpoint]
        if self.ema is not None and "params_ema" not in checkpoint:
            absent.append("params_ema (ema_decay is set)")
        if absent:
            raise CheckpointError(f"{path}: cannot resume this trainer: no {', '.join(absent)} in the checkpoint")
        for name, item in self.state.items():
            item.load_state_dict(checkpoint[name])
        if self.ema is not None:
            load_state(self.ema.module, checkpoint["params_ema"], source=f"{path} [params_ema]")
            self.ema.n_averaged.fill_(checkpoint["ema_updates"])
        restore_rng_state(checkpoint["rng"], self.stack)
        self.step, self.best = checkpoint["step"], checkpoint.get("best")
        self.job.run.drop_metrics_after(self.step)
        self.job.run.log(f"resumed from {path} at step {self.step}")

    # ------------------------------------------------------------------ steps

    def batches(
        self, dataset: Any, batch_size: int, num_workers: int = 0, *, start: int | None = None, seed: int | None = None
    ) -> Iterator[dict[str, Any]]:
        """Training batches on the device, from where the run stands, until the last step.

        A trainer that draws from several datasets (one per phase) passes ``start``, the batches this stream
        has already given (default: the loop's step), and a ``seed`` of its own (default: the run's).
        """
        start = self.step if start is None else start
        seed = self.job.seed if seed is None else seed
        loader = training_loader(dataset, batch_size, num_workers, seed, self.job.distributed, start)
        for batch in loader:
            if self.step >= self.options.iterations:
                return
            batch = to_device(batch, self.device)
            if self.options.channels_last:
                batch = {k: _channels_last(v) for k, v in batch.items()}
            yield batch

    def check_finite(self, total: torch.Tensor, terms: Mapping[str, torch.Tensor]) -> None:
        """Stop the run (on every rank) when the loss is not finite, naming the last good checkpoint."""
        if not all_true(bool(torch.isfinite(total)), self.job.distributed):
            raise TrainingError(
                f"step {self.step + 1}: the loss is not finite ({_format(terms)}); training stopped, "
                f"last good checkpoint: {self.checkpoints.latest() or 'none yet'}"
            )

    def step_done(self, logs: Mapping[str, float]) -> None:
        """After an optimizer step: update the EMA, call the hooks, log, validate and save when due."""
        options, run = self.options, self.job.run
        if self.ema is not None:
            self.ema.update_parameters(self.stack)
        self.step += 1
        self.job.emit("deblurstack_train_step_end", run=self.job.state(self.stack, self.step), logs=dict(logs))
        self.progress.update(1)
        self.progress.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if "/" not in k}, refresh=False)
        if self.step % options.log_every == 0:
            rate = (self.step - self.first_step) / (time.perf_counter() - self.started)
            run.log(f"step {self.step}: {_format(logs)} ({rate:.2f} it/s)")
            if self.board is not None:
                for name, value in logs.items():
                    self.board.add_scalar(f"train/{name}", value, self.step)
        is_best = False
        if self.validation is not None and options.due(options.val_every, self.step):
            is_best = self.validate(self.ema.module if self.ema is not None else self.stack)
        if is_best or options.due(options.save_every, self.step):
            self.save(is_best)

    def save(self, is_best: bool = False) -> None:
        """Write a checkpoint of the run as it stands (main process only)."""
        if not self.job.distributed.is_main:
            return
        checkpoint = {
            "step": self.step,
            "params": self.stack.state_dict(),
            **{name: item.state_dict() for name, item in self.state.items()},
            "rng": rng_state(self.stack),
            "best": self.best,
            "config": self.job.config,
        }
        if self.ema is not None:
            checkpoint.update(params_ema=self.ema.module.state_dict(), ema_updates=int(self.ema.n_averaged))
        self.checkpoints.save(checkpoint, self.step, best=is_best)

    # ------------------------------------------------------------------ validation

    def validate(self, model: nn.Module) -> bool:
        """Score ``model`` on the validation split; whether this step is the best so far."""
        split, job = self.val_split, self.job
        generators = {name: m.generator.get_state() for name, m in stochastic_modules(model).items()}
        with torch.random.fork_rng(devices=[]):  # validation must not shift the training random streams
            result = evaluate(
                model,
                self.validation,
                self.metrics,
                job.distributed,
                score_input=False,
                keep_samples=self.options.grid_samples,
                tile=self.options.val_tile,
            )
        for name, module in stochastic_modules(model).items():
            module.generator.set_state(generators[name])
        means = result.means()
        job.run.add_metrics(self.step, split, means)
        job.run.log(f"validation at step {self.step}: {_format(means)}")
        if self.board is not None:
            for name, value in means.items():
                self.board.add_scalar(f"{split}/{name}", value, self.step)
            for sample in result.samples:
                images = torch.stack([sample.input, sample.output, sample.target])
                self.board.add_images(f"{split}/{sample.name}", images, self.step)
        job.emit(
            "deblurstack_validation_end",
            run=job.state(model, self.step),
            metrics={f"{split}/{k}": v for k, v in means.items()},
            samples=result.samples,
        )
        name = self.options.best_metric or next(iter(means))
        if name not in means:  # the config check refuses unknown names; a metric may still skip a column
            raise TrainingError(f"best_metric {name!r} is not among the validation metrics ({', '.join(means)})")
        higher = next(
            (m.higher_is_better for m in self.metrics if name == m.name or name.startswith(f"{m.name}_")), True
        )
        value = means[name]
        improved = self.best is None or (value > self.best["value"] if higher else value < self.best["value"])
        if improved and math.isfinite(value):
            self.best = {"metric": name, "value": value, "step": self.step}
            return True
        return False


def _channels_last(value: Any) -> Any:
    return (
        value.contiguous(memory_format=torch.channels_last)
        if isinstance(value, torch.Tensor) and value.dim() == 4
        else value
    )


def _tensorboard(folder: Any) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError(
            "tensorboard: true needs the tensorboard package (pip install 'deblurstack[tensorboard]')"
        ) from None
    return SummaryWriter(str(folder))


def _format(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {v.item() if isinstance(v, torch.Tensor) else v:.5g}" for k, v in values.items())


__all__ = ["LoopOptions", "TrainingLoop"]
