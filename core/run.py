"""What lifecycle hooks receive: the state of a run and validation samples."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor, nn


@dataclass
class RunState:
    """A training run as plugins see it.

    Attributes:
        directory: the run folder (resolved config, checkpoints, logs).
        config: the resolved configuration.
        model: the stack being trained (or a trainer's own network, where its record says trains_stack=False).
        step: optimizer steps done so far.
        rank: process rank under torchrun; loggers usually act on rank 0 only.
        extras: a place for plugins to keep per-run state, keyed by plugin name.
    """

    directory: Path
    config: Mapping[str, Any]
    model: nn.Module
    step: int = 0
    rank: int = 0
    extras: dict[str, Any] = field(default_factory=dict)


@dataclass
class Sample:
    """One validation image triple, CHW tensors in [0, 1]; with a translator, also what the backbone saw."""

    name: str
    input: Tensor
    output: Tensor
    target: Tensor
    translated: Tensor | None = None


__all__ = [
    "RunState",
    "Sample",
]
