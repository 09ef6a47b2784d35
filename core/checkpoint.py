"""Reading weights safely and writing files atomically.

Checkpoints are always read with ``torch.load(..., weights_only=True)``: a file that needs code
execution to unpickle is refused. Writes go to a temporary file in the same folder, then
``os.replace``, so an interrupted save never leaves a half-written file behind.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deblurstack.data import atomic_file
from deblurstack.errors import CheckpointError

#: keys under which BasicSR-style (NAFNet, Restormer: ``params``/``params_ema``), MIMO-UNet
#: (``model``) and generic (``state_dict``) checkpoints keep their weights, in order of preference.
STATE_DICT_KEYS = ("params", "params_ema", "model", "state_dict")
_SHOWN = 3


def read_checkpoint(path: str | Path) -> Mapping[str, Any]:
    """The mapping stored in ``path``, loaded with ``weights_only=True`` (no code runs)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a folder, not a checkpoint file (a run's are in <run>/checkpoints/)")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        if found is None and not zipfile.is_zipfile(path):  # a text file, say: not a pickle that was refused
            raise CheckpointError(f"{path}: not a torch checkpoint (neither torch's zip format nor a pickle)") from None
        holds = f"a {found.group(1)} object" if found else "Python objects"
        raise CheckpointError(
            f"{path}: refused: the file holds {holds} besides tensors, and deblurstack only reads weights and never "
            f"runs code from a checkpoint; if you trust the file, save its state dict once as plain tensors: "
            f"python -c \"import torch; c = torch.load('{path}', weights_only=False); "
            f"torch.save(c['state_dict'], 'weights.pth')\" (with the key that holds the weights)"
        ) from None
    except Exception as error:
        raise CheckpointError(f"{path}: not a readable torch checkpoint: {type(error).__name__}: {error}") from None
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: expected a mapping of weights, found {type(loaded).__name__}")
    return loaded


def read_state_dict(
    path: str | Path, key: str | None = None, candidates: Sequence[str] = STATE_DICT_KEYS
) -> dict[str, Tensor]:
    """The state dict stored in ``path``: under ``key``, the first of ``candidates`` it holds, or the file itself.

    A file saved from a ``DataParallel``/``DistributedDataParallel`` wrapper (every key under ``module.``)
    comes back without that prefix.
    """
    loaded = read_checkpoint(path)
    if key is None and not all(isinstance(v, Tensor) for v in loaded.values()):
        key = next((k for k in candidates if isinstance(loaded.get(k), Mapping)), None)
        if key is None:
            keys = ", ".join(map(str, loaded))
            raise CheckpointError(f"{path}: no state dict under {', '.join(candidates)} (keys: {keys})")
    if key is not None:
        if key not in loaded:
            raise CheckpointError(f"{path}: no key {key!r} (keys: {', '.join(map(str, loaded))})")
        loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path}: {key or 'the file'} is not a state dict (a mapping of tensors)")
    if loaded and all(str(k).startswith("module.") for k in loaded):  # saved from DataParallel/DDP
        return {str(k).removeprefix("module."): v for k, v in loaded.items()}
    return dict(loaded)


def load_weights(module: nn.Module, path: str | Path, *, key: str | None = None, strict: bool = True) -> None:
    """Load a checkpoint into ``module`` (see :func:`load_state`)."""
    load_state(module, read_state_dict(path, key), source=str(path), strict=strict)


def load_state(module: nn.Module, state: Mapping[str, Tensor], source: str, strict: bool = True) -> None:
    """Load ``state`` into ``module``, naming the first mismatched keys and shapes on failure.

    A module may define ``remap_state_dict(state_dict) -> state_dict`` to accept official
    checkpoints whose parameter names differ from its own.
    """
    remap = getattr(module, "remap_state_dict", None)
    if callable(remap):
        state = remap(dict(state))
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)} in the model"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {_some(mismatched)}")
    if strict and missing:
        problems.append(f"missing keys: {_some(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys: {_some(unexpected)}")
    if problems:
        raise CheckpointError(f"{source} does not fit {type(module).__name__}: {'; '.join(problems)}")
    if any(value.is_meta for value in own.values()):
        return  # a module built on the meta device (config check) has no memory to load into: fitting is the check
    # the checks above are the strict ones, against state_dict(): torch's own would also expect what a module keeps
    # out of its state_dict (VGG16Perceptual's constants)
    module.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def load_stack_weights(stack: nn.Module, path: str | Path, weights: str = "auto") -> str:
    """Load a training checkpoint (``params``/``params_ema``) or a plain state dict; returns what was loaded."""
    checkpoint = read_checkpoint(path)
    if "params" not in checkpoint:
        if weights == "ema":
            raise CheckpointError(f"{path}: --weights ema, but the file is a plain state dict without params_ema")
        load_state(stack, read_state_dict(path), source=str(path))
        return "state dict"
    if weights == "ema" and "params_ema" not in checkpoint:
        raise CheckpointError(f"{path}: --weights ema, but the checkpoint has no params_ema (EMA was off)")
    key = "params_ema" if weights != "model" and "params_ema" in checkpoint else "params"
    load_state(stack, checkpoint[key], source=f"{path} [{key}]")
    return f"{key}, step {checkpoint.get('step', '?')}"


def save_atomic(obj: Any, path: str | Path) -> None:
    """``torch.save`` to ``path`` atomically (see :func:`deblurstack.data.atomic_file`)."""
    with atomic_file(path) as file:
        torch.save(obj, file)


def _some(items: list[str]) -> str:
    more = f" (+{len(items) - _SHOWN} more)" if len(items) > _SHOWN else ""
    return ", ".join(items[:_SHOWN]) + more


__all__ = [
    "STATE_DICT_KEYS",
    "load_stack_weights",
    "load_state",
    "load_weights",
    "read_checkpoint",
    "read_state_dict",
    "save_atomic",
]
