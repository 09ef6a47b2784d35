"""A run folder: everything needed to know what ran and to resume it.

::

    runs/<name>/
        config.yaml        the explicit resolved configuration (every parameter written out)
        environment.yaml   command, code version, Python/torch versions, plugins and their distributions
        train.log          one line per logged step and validation
        metrics.csv        step, split, metric, value
        checkpoints/       step_XXXXXXXX.pth (the last few) and best.pth
        images/            validation image grids
"""

from __future__ import annotations

import csv
import io
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

import deblurstack
from deblurstack.data import write_bytes_atomic


class RunFolder:
    """The files of one run. Only the main process writes."""

    def __init__(self, directory: Path, writable: bool = True) -> None:
        self.directory = Path(directory)
        self.writable = writable
        self.checkpoints = self.directory / "checkpoints"
        self.images = self.directory / "images"

    @classmethod
    def create(
        cls,
        root: str | Path,
        name: str,
        config: Mapping[str, Any],
        plugins: Mapping[str, str],
        directory: Path | None = None,
        command: str = "",
    ) -> RunFolder:
        """A new folder ``root/name`` (``name_1``, ``name_2`` ... if taken), or ``directory`` when resuming.

        Writes the config and the environment (a resumed run adds ``environment_resumed_<time>.yaml``).
        """
        resumed = directory is not None
        if directory is None:
            directory, suffix = Path(root) / name, 0
            while directory.exists() and any(directory.iterdir()):
                suffix += 1
                directory = Path(root) / f"{name}_{suffix}"
        run = cls(directory)
        for folder in (run.directory, run.checkpoints, run.images):
            folder.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(run.directory / "config.yaml", yaml.safe_dump(dict(config), sort_keys=False).encode())
        environment = {
            "command": command or shlex.join(sys.argv),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "deblurstack": code_version(),
            "python": platform.python_version(),
            "torch": str(torch.__version__),
            "platform": platform.platform(),
            "plugins": dict(plugins),
        }
        stamp = time.strftime("%Y%m%d_%H%M%S")
        file_name = f"environment_resumed_{stamp}.yaml" if resumed else "environment.yaml"
        write_bytes_atomic(run.directory / file_name, yaml.safe_dump(environment, sort_keys=False).encode())
        return run

    def log(self, message: str) -> None:
        if self.writable:
            with open(self.directory / "train.log", "a") as file:
                file.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")

    def add_metrics(self, step: int, split: str, values: Mapping[str, float]) -> None:
        if not self.writable:
            return
        path = self.directory / "metrics.csv"
        new = not path.exists()
        with open(path, "a", newline="") as file:
            writer = csv.writer(file)
            if new:
                writer.writerow(["step", "split", "metric", "value"])
            writer.writerows([step, split, name, f"{value:.6f}"] for name, value in values.items())

    def drop_metrics_after(self, step: int) -> None:
        """Remove the rows of steps after ``step`` from ``metrics.csv`` (a resumed run writes them again)."""
        path = self.directory / "metrics.csv"
        if not self.writable or not path.exists():
            return
        with open(path, newline="") as file:
            rows = list(csv.reader(file))
        kept = rows[:1] + [row for row in rows[1:] if int(row[0]) <= step]
        if len(kept) < len(rows):
            text = io.StringIO()
            csv.writer(text).writerows(kept)
            write_bytes_atomic(path, text.getvalue().encode())


def run_folder_of(checkpoint: str | Path) -> Path | None:
    """The run folder a checkpoint belongs to (``<run>/checkpoints/<file>``), or None for a file elsewhere."""
    path = Path(checkpoint)
    return path.parent.parent if path.parent.name == "checkpoints" else None


def code_version() -> str:
    """deblurstack's version, with the git commit (and ``-dirty``) when it runs from a checkout."""
    source = Path(deblurstack.__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(source), "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{deblurstack.__version__} ({commit})" if commit else deblurstack.__version__


__all__ = ["RunFolder", "code_version", "run_folder_of"]
