"""deblurstack in real processes: any command alone or under torchrun (:func:`deblurstack_process`), training killed
with SIGKILL at a chosen moment and resumed, and the comparison of the checkpoints they leave."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

#: A plugin that kills its own process with SIGKILL at a chosen moment (``DEBLURSTACK_KILL=moment:step``):
#: ``step`` after that training step, ``validation`` after that step's validation (before its checkpoint),
#: ``save`` halfway through writing that step's checkpoint. Install it with the ``installed`` fixture and pass
#: its folder as ``site`` to :func:`train_process`.
KILLER = """
import os, signal
import torch
from deblurstack import hookimpl

MOMENT, _, STEP = os.environ.get("DEBLURSTACK_KILL", ":0").partition(":")
STEP = int(STEP)
_save = torch.save

def _die():
    os.kill(os.getpid(), signal.SIGKILL)

def _partial_save(obj, file, *args, **kwargs):
    if MOMENT == "save" and isinstance(obj, dict) and obj.get("step") == STEP:
        _save(obj, file, *args, **kwargs)
        file.truncate(file.tell() // 2)
        file.flush()
        _die()
    return _save(obj, file, *args, **kwargs)

torch.save = _partial_save

@hookimpl
def deblurstack_train_step_end(run, logs):
    if MOMENT == "step" and run.step == STEP:
        _die()

@hookimpl
def deblurstack_validation_end(run, metrics, samples):
    if MOMENT == "validation" and run.step == STEP:
        _die()
"""


def install_killer(installed) -> Path:
    """Install :data:`KILLER` as a plugin distribution (``installed``: the fixture); returns its site folder."""
    return installed("deblurstack-killer", {"killer": KILLER}, {"killer": "killer"})


def train_process(
    config: str | Path,
    runs_dir: str | Path,
    *arguments: str,
    processes: int = 1,
    kill: str = "",
    site: Path | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``deblurstack train CONFIG --runs-dir RUNS_DIR ARGUMENTS`` in a new process, or in ``processes`` ranks under
    torchrun, one thread each. ``site``: a folder of installed plugins to add (e.g. :func:`install_killer`'s), ``kill``:
    when the killer plugin kills the process (``step:13``, ``validation:20``, ``save:30``)."""
    arguments = ("train", str(config), "--runs-dir", str(runs_dir), *arguments)
    return deblurstack_process(*arguments, processes=processes, kill=kill, site=site, timeout=timeout)


def deblurstack_process(
    *arguments: str, processes: int = 1, kill: str = "", site: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess:
    """``deblurstack ARGUMENTS`` in a new process, or in ``processes`` ranks under torchrun, one thread each; see
    :func:`train_process`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DEBLURSTACK_KILL": kill}
    if site is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    launcher = [sys.executable, "-m"]
    if processes > 1:
        launcher += ["torch.distributed.run", "--standalone", "--nproc_per_node", str(processes), "-m"]
    command = [*launcher, "deblurstack", *arguments]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)


def tensor_pairs(a: object, b: object, key: str = "") -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Pairs of corresponding tensors in two nested checkpoints, which must have the same structure and equal
    values elsewhere (steps, names, ...)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), key
        return [t for k in a for t in tensor_pairs(a[k], b[k], f"{key}.{k}")]
    if isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), key
        return [t for i, (x, y) in enumerate(zip(a, b, strict=True)) for t in tensor_pairs(x, y, f"{key}[{i}]")]
    if isinstance(a, torch.Tensor):
        return [(key, a, b)]
    assert a == b, key
    return []


def unequal_tensors(a: object, b: object) -> list[str]:
    """The keys of the tensors that are not bit-identical between two checkpoints of the same structure."""
    return [key for key, x, y in tensor_pairs(a, b) if not torch.equal(x, y)]
