"""Training checkpoints: the last few by step, the best, and the random states that make a resumed
run bit-identical to an uninterrupted one.

A checkpoint is a plain dict saved with :func:`deblurstack.save_atomic` and read back with
``weights_only=True``; the model weights sit under ``params`` (and ``params_ema``), the keys
BasicSR uses, so ``checkpoint: {path: ..., key: params_ema}`` loads them into any stack.
"""

from __future__ import annotations

import os
import random
import re
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from deblurstack.checkpoint import read_checkpoint, save_atomic
from deblurstack.contracts import Stochastic
from deblurstack.errors import CheckpointError

STEP_FILE = re.compile(r"step_(\d{8})\.pth")


class Checkpoints:
    """``folder/step_XXXXXXXX.pth`` for the last ``keep_last`` saves, and ``folder/best.pth``."""

    def __init__(self, folder: str | Path, keep_last: int = 3) -> None:
        self.folder = Path(folder)
        self.keep_last = keep_last

    def save(self, state: dict[str, Any], step: int, best: bool = False) -> Path:
        """Write atomically; older step files are removed only after the new one is in place."""
        path = self.folder / f"step_{step:08d}.pth"
        save_atomic(state, path)
        if best:
            _replace_with_link(path, self.folder / "best.pth")
        for old in self.steps()[: -self.keep_last]:
            old.unlink(missing_ok=True)
        return path

    def remove_partial_writes(self) -> list[Path]:
        """Delete the temporary files of writes a killed process left unfinished; returns them."""
        partial = sorted(self.folder.glob(".*.tmp")) if self.folder.is_dir() else []
        for path in partial:
            path.unlink(missing_ok=True)
        return partial

    def steps(self) -> list[Path]:
        """Step checkpoints, oldest first."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if STEP_FILE.fullmatch(p.name))

    def latest(self) -> Path | None:
        steps = self.steps()
        return steps[-1] if steps else None


def load_training_state(path: str | Path) -> dict[str, Any]:
    """A training checkpoint, read with ``weights_only=True``."""
    state = read_checkpoint(path)
    if "step" not in state or "params" not in state:
        raise CheckpointError(f"{path}: not a training checkpoint (no 'step' and 'params')")
    return state


def stochastic_modules(model: nn.Module) -> dict[str, Stochastic]:
    """The modules of ``model`` that draw from generators of their own, by name (``priors.0``)."""
    return {name: module for name, module in model.named_modules() if isinstance(module, Stochastic)}


def seed_generators(model: nn.Module, seed: int, rank: int = 0) -> None:
    """Seed each :class:`~deblurstack.Stochastic` module of ``model`` from the run's seed, the rank and its name:
    independent streams per module and process, the same in every run with this seed."""
    for name, module in stochastic_modules(model).items():
        key = zlib.crc32(f"{seed}/{rank}/{name}".encode())
        module.generator.manual_seed(key)


def seed_global_generators(seed: int) -> None:
    """Seed torch's, numpy's and Python's global generators, so two runs with one seed draw alike everywhere."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def rng_state(model: nn.Module | None = None) -> dict[str, Any]:
    """Every random state a training step may draw from: the global generators and those of ``model``'s
    stochastic modules."""
    legacy = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(legacy[1].astype(np.int64)),
            "position": int(legacy[2]),
            "has_gauss": int(legacy[3]),
            "gauss": float(legacy[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if model is not None:
        state["modules"] = {name: m.generator.get_state() for name, m in stochastic_modules(model).items()}
    return state


def restore_rng_state(state: dict[str, Any], model: nn.Module | None = None) -> None:
    """Undo :func:`rng_state`; ``model``'s stochastic modules get their saved generator states."""
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(
        ("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"], numpy["has_gauss"], numpy["gauss"])
    )
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if model is not None:
        saved = state.get("modules", {})
        for name, module in stochastic_modules(model).items():
            if name not in saved:
                raise CheckpointError(
                    f"the checkpoint has no random state for {name} (saved: {', '.join(saved) or 'none'})"
                )
            module.generator.set_state(saved[name])


def _replace_with_link(source: Path, target: Path) -> None:
    temporary = target.with_name(f".{target.name}.tmp")
    temporary.unlink(missing_ok=True)
    try:
        os.link(source, temporary)  # no second copy of the bytes
    except OSError:
        warnings.warn(f"cannot hard-link {source} to {target}; copying", stacklevel=2)
        save_atomic(torch.load(source, map_location="cpu", weights_only=True), temporary)
    os.replace(temporary, target)


__all__ = [
    "Checkpoints",
    "load_training_state",
    "restore_rng_state",
    "rng_state",
    "seed_generators",
    "seed_global_generators",
    "stochastic_modules",
]
