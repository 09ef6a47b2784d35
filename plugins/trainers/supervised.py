"""Iteration-based supervised training, as BasicSR/NAFNet train: one optimizer over every trainable
parameter, a per-iteration learning-rate schedule, gradient-norm clipping, optional EMA and AMP,
validation and checkpoints every so many iterations."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from deblurstack import TrainingError
from deblurstack.engine.checkpoints import Checkpoints, load_training_state, restore_rng_state, rng_state
from deblurstack.engine.distributed import all_true
from deblurstack.engine.evaluation import evaluate
from deblurstack.engine.training import LossStep, TrainingJob, to_device, training_loader


@dataclass
class SupervisedTrainer:
    """Minimise the stack's weighted losses on ``data.train``; validate on ``data.<val_split>``.

    Args:
        iterations: optimizer steps in total.
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
        ema_decay: decay of an exponential moving average of the weights, used for validation and saved
            as ``params_ema``; 0 turns it off.
        amp: mixed precision: float16 with loss scaling on CUDA, bfloat16 on CPU.
        val_split: the data split validated on (skipped when the config has none).
        val_every: validate every so many iterations (and at the end); 0 only at the end.
        val_tile: validate whole images in overlapping tiles of this size; unset for whole images.
        best_metric: metric (column) that picks ``best.pth``; default: the first metric.
        save_every: write a checkpoint every so many iterations (and at the end).
        keep_last: step checkpoints kept on disk (``best.pth`` is kept besides).
        log_every: write a line to train.log every so many iterations.
        grid_samples: validation images shown in the image grids.
        tensorboard: also write losses, learning rate, validation metrics and images for TensorBoard
            to ``<run>/tensorboard`` (needs the ``tensorboard`` package: ``pip install 'deblurstack[tensorboard]'``).
        deterministic: use only deterministic algorithms (needed for bit-identical resumes on GPU).
        find_unused_parameters: let DDP tolerate parameters that get no gradient in a step.
    """

    iterations: int
    batch_size: int = 8
    num_workers: int = 0
    optimizer: Literal["adamw", "adam"] = "adamw"
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    scheduler: Literal["cosine", "multistep", "constant"] = "cosine"
    eta_min: float = 1e-7
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    grad_clip: float | None = None
    ema_decay: float = 0.0
    amp: bool = False
    val_split: str = "val"
    val_every: int = 0
    val_tile: int | None = None
    best_metric: str | None = None
    save_every: int = 0
    keep_last: int = 3
    log_every: int = 100
    grid_samples: int = 4
    tensorboard: bool = False
    deterministic: bool = False
    find_unused_parameters: bool = False

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1:
            raise ValueError(f"iterations and batch_size must be >= 1, got {self.iterations} and {self.batch_size}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    # ------------------------------------------------------------------ set-up

    def optimizer_for(self, parameters: list[nn.Parameter]) -> torch.optim.Optimizer:
        kind = torch.optim.AdamW if self.optimizer == "adamw" else torch.optim.Adam
        return kind(parameters, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)

    def scheduler_for(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        if self.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.iterations, eta_min=self.eta_min)
        if self.scheduler == "multistep":
            return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(self.milestones), gamma=self.gamma)
        return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)

    def due(self, every: int, step: int) -> bool:
        return step == self.iterations or (every > 0 and step % every == 0)

    # ------------------------------------------------------------------ the loop

    def fit(self, job: TrainingJob) -> None:
        stack, distributed, run = job.stack, job.distributed, job.run
        device = distributed.device
        if self.deterministic:
            torch.use_deterministic_algorithms(True)
        parameters = [p for p in stack.parameters() if p.requires_grad]
        if not parameters:
            raise TrainingError("nothing to train: every part of the stack is frozen")
        optimizer = self.optimizer_for(parameters)
        scheduler = self.scheduler_for(optimizer)
        ema = (
            AveragedModel(stack, multi_avg_fn=get_ema_multi_avg_fn(self.ema_decay), use_buffers=True)
            if self.ema_decay
            else None
        )
        scaler = torch.amp.GradScaler(device.type, enabled=self.amp and device.type == "cuda")
        autocast_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
        checkpoints = Checkpoints(run.checkpoints, self.keep_last)
        board = _tensorboard(run.directory / "tensorboard") if self.tensorboard and distributed.is_main else None
        step, best = 0, None
        if job.resume_from is not None:
            state = load_training_state(job.resume_from)
            stack.load_state_dict(state["params"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            if ema is not None:
                ema.module.load_state_dict(state["params_ema"])
                ema.n_averaged.fill_(state["ema_updates"])
            restore_rng_state(state["rng"])
            step, best = state["step"], state.get("best")
            run.log(f"resumed from {job.resume_from} at step {step}")

        def save(is_best: bool = False) -> None:
            if not distributed.is_main:
                return
            state = {
                "step": step,
                "params": stack.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": rng_state(),
                "best": best,
                "config": job.config,
            }
            if ema is not None:
                state.update(params_ema=ema.module.state_dict(), ema_updates=int(ema.n_averaged))
            checkpoints.save(state, step, best=is_best)

        metrics = job.metrics()
        validation = job.dataset(self.val_split) if job.has_split(self.val_split) and metrics else None
        model: nn.Module = LossStep(stack)
        if distributed.enabled:
            model = DistributedDataParallel(model, find_unused_parameters=self.find_unused_parameters)
        loader = training_loader(job.dataset("train"), self.batch_size, self.num_workers, job.seed, distributed, step)
        job.emit("deblurstack_run_start", run=job.state(stack, step))
        progress = tqdm(
            total=self.iterations,
            initial=step,
            desc=run.directory.name,
            disable=not distributed.is_main,
            dynamic_ncols=True,
            mininterval=1.0,
        )
        status, started = "failed", time.perf_counter()
        try:
            for batch in loader:
                if step >= self.iterations:
                    break
                batch = to_device(batch, device)
                with torch.autocast(device.type, dtype=autocast_dtype, enabled=self.amp):
                    total, terms = model(batch)
                if not all_true(bool(torch.isfinite(total)), distributed):
                    last = checkpoints.latest()
                    raise TrainingError(
                        f"step {step + 1}: the loss is not finite ({_format(terms)}); training stopped, "
                        f"last good checkpoint: {last or 'none yet'}"
                    )
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if self.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(parameters, self.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update_parameters(stack)
                step += 1
                logs = {
                    "loss": total.item(),
                    **{f"loss/{k}": v.item() for k, v in terms.items()},
                    "lr": scheduler.get_last_lr()[0],
                }
                job.emit("deblurstack_train_step_end", run=job.state(stack, step), logs=logs)
                progress.update(1)
                progress.set_postfix(loss=f"{logs['loss']:.4g}", lr=f"{logs['lr']:.2e}", refresh=False)
                if self.log_every and step % self.log_every == 0:
                    rate = (step - progress.initial) / (time.perf_counter() - started)
                    run.log(f"step {step}: {_format(logs)} ({rate:.2f} it/s)")
                    if board is not None:
                        for name, value in logs.items():
                            board.add_scalar(f"train/{name}", value, step)
                is_best = False
                if validation is not None and self.due(self.val_every, step):
                    best, is_best = self.validate(
                        job, ema.module if ema is not None else stack, validation, metrics, step, best, board
                    )
                if is_best or self.due(self.save_every, step):
                    save(is_best)
            status = "completed"
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            progress.close()
            if board is not None:
                board.close()
            job.emit("deblurstack_run_end", run=job.state(stack, step), status=status)
            run.log(f"run {status} at step {step}")

    def validate(
        self,
        job: TrainingJob,
        model: nn.Module,
        dataset: Any,
        metrics: list,
        step: int,
        best: dict[str, Any] | None,
        board: Any = None,
    ) -> tuple[dict[str, Any] | None, bool]:
        """Score ``model`` on the validation split; returns the best record and whether this step is it."""
        with torch.random.fork_rng(devices=[]):  # validation must not shift the training random stream
            result = evaluate(
                model,
                dataset,
                metrics,
                job.distributed,
                score_input=False,
                keep_samples=self.grid_samples,
                tile=self.val_tile,
            )
        means = result.means()
        job.run.add_metrics(step, self.val_split, means)
        job.run.log(f"validation at step {step}: {_format(means)}")
        if board is not None:
            for name, value in means.items():
                board.add_scalar(f"{self.val_split}/{name}", value, step)
            for sample in result.samples:
                board.add_images(
                    f"{self.val_split}/{sample.name}", torch.stack([sample.input, sample.output, sample.target]), step
                )
        job.emit(
            "deblurstack_validation_end",
            run=job.state(model, step),
            metrics={f"{self.val_split}/{k}": v for k, v in means.items()},
            samples=result.samples,
        )
        name = self.best_metric or next(iter(means))
        if name not in means:
            raise TrainingError(f"best_metric {name!r} is not among the validation metrics ({', '.join(means)})")
        higher = next((m.higher_is_better for m in metrics if name == m.name or name.startswith(f"{m.name}_")), True)
        value = means[name]
        improved = best is None or (value > best["value"] if higher else value < best["value"])
        if improved and math.isfinite(value):
            return {"metric": name, "value": value, "step": step}, True
        return best, False


def _tensorboard(folder: Any) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError(
            "tensorboard: true needs the tensorboard package (pip install 'deblurstack[tensorboard]')"
        ) from None
    return SummaryWriter(str(folder))


def _format(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v.item() if isinstance(v, torch.Tensor) else v:.5g}" for k, v in values.items())
