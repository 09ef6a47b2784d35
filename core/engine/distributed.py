"""torchrun integration: process group set-up from the environment, and gathering results."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from deblurstack.errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    """This process's place: ``rank`` of ``world_size``, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA when available), ``cpu``, ``cuda`` or ``cuda:N``."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        place = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if place.type == "cuda":
        count = torch.cuda.device_count()  # 0 without a driver or with a CPU-only torch
        if count == 0 or (place.index or 0) >= count:
            raise ConfigError(
                f"--device {device!r}: "
                + (f"this machine has {count} CUDA device(s)" if count else "no CUDA device is available here")
                + f" (torch {torch.__version__}, built for CUDA {torch.version.cuda or 'none'})"
            )
    return place


def setup(device: str = "auto") -> Distributed:
    """Join the process group torchrun describes (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``), if any.

    gloo on CPU, nccl on CUDA. ``device``: see :func:`resolve_device`.
    """
    use_cuda = resolve_device(device).type == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed(device=resolve_device(device))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Distributed(
        dist.get_rank(), dist.get_world_size(), torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    )


def wait_for_all(distributed: Distributed) -> None:
    """Return once every rank has called it (a barrier). Call it before :func:`teardown` when a command ends well:
    a gloo rank that destroys its group while its last collective is still in flight may abort as it exits
    ("terminate called without an active exception", about one two-rank run in ten on two busy cores). Not after
    an error, since the other ranks may never arrive."""
    if distributed.enabled:
        dist.barrier()


def teardown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def gather(value: Any, distributed: Distributed) -> list[Any]:
    """Every rank's ``value``, in rank order (just ``[value]`` without a process group)."""
    if not distributed.enabled:
        return [value]
    values: list[Any] = [None] * distributed.world_size
    dist.all_gather_object(values, value)
    return values


def all_true(flag: bool, distributed: Distributed) -> bool:
    """Whether ``flag`` holds on every rank."""
    if not distributed.enabled:
        return flag
    tensor = torch.tensor([int(flag)], device=distributed.device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return bool(tensor.item())


def average_gradients(parameters: Iterable[torch.Tensor], distributed: Distributed) -> None:
    """Average the gradients of ``parameters`` over the ranks, in place, in one all-reduce.

    What DistributedDataParallel does after ``backward``, for trainers it does not fit: an adversarial step runs
    the discriminator several times before one backward and differentiates through its gradient (a gradient
    penalty), which DDP's reducer does not support. A parameter without a gradient counts as zero on its rank.
    """
    if not distributed.enabled:
        return
    parameters = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= distributed.world_size
    offset = 0
    for parameter, grad in zip(parameters, grads, strict=True):
        parameter.grad = flat[offset : offset + grad.numel()].view_as(grad).clone()
        offset += grad.numel()


def broadcast_buffers(module: torch.nn.Module, distributed: Distributed) -> None:
    """Give every rank rank 0's buffers (BatchNorm's running statistics), as DDP does before each forward: without
    it, each rank's statistics follow its own samples, and validation (sharded) would score different models."""
    if distributed.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


__all__ = [
    "Distributed",
    "all_true",
    "average_gradients",
    "broadcast_buffers",
    "gather",
    "resolve_device",
    "setup",
    "teardown",
    "wait_for_all",
]
