"""Forward time of every built-in backbone and preset on CPU: 256x256, batch 1, inference_mode, median of repeats.

Each row is a backbone of the registry, with its defaults (when they differ from every preset) and with each
preset. Per row: parameters, MACs (torch.utils.flop_counter on the meta device: convolutions and matrix
products) and the median forward time in eval mode under torch.inference_mode, after one warm-up run. Rows run
one after the other (a big preset takes seconds a run), so the load average is printed before and after.

    python benchmarks/backbone_speed.py [--only 'nafnet*'] [--repeats 3] [--size 256] [--threads N]
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import os
import statistics
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from deblurstack.registry import get_plugin_manager


def rows(pattern: str | None) -> list[tuple[str, Any, dict[str, Any], str]]:
    """(type name, factory, parameters, note) for every backbone and preset whose type name matches."""
    manager = get_plugin_manager()
    found = []
    for name, component in manager.components("backbone").items():
        factory = component.load_factory()
        defaults = {
            key: p.default
            for key, p in inspect.signature(factory).parameters.items()
            if p.default is not inspect.Parameter.empty
        }
        presets = {f"{name}.{preset}": dict(params) for preset, params in component.record.presets.items()}
        same = [type_name for type_name, params in presets.items() if {**defaults, **params} == defaults]
        candidates = {} if same else {name: {}}  # the defaults, unless a preset is the same network
        candidates.update(presets)
        for type_name, params in candidates.items():
            if pattern is None or fnmatch.fnmatchcase(type_name, pattern):
                note = f"= {name} (defaults)" if type_name in same else ""
                found.append((type_name, factory, params, note))
    return found


def macs(factory: Any, params: dict[str, Any], size: int) -> float | None:
    """Multiply-accumulates of one forward on the meta device (None when a model cannot run there)."""
    try:
        with torch.device("meta"):
            model = factory(**params).eval()
            image = torch.empty(1, 3, size, size)
        counter = FlopCounterMode(display=False)
        with counter, torch.inference_mode():
            model(image)
        return counter.get_total_flops() / 2
    except Exception:
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", metavar="PATTERN", help="shell-style pattern of type names, e.g. 'nafnet*'")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per backbone (after one warm-up)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    selected = rows(args.only)
    if not selected:
        raise SystemExit(f"no backbone type matches {args.only!r}")
    before = os.getloadavg()
    print(
        f"{args.size}x{args.size}, batch 1, CPU, {args.threads} threads, inference_mode, {args.repeats} runs each "
        f"after a warm-up; torch {torch.__version__}; load average {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}"
    )
    header = f"{'backbone':<28} {'params (M)':>10} {'GMACs':>8} {'median ms':>10} {'min ms':>9}  note"
    print(header)
    print("-" * len(header))
    image = torch.rand(1, 3, args.size, args.size)
    for type_name, factory, params, note in selected:
        torch.manual_seed(0)
        model = factory(**params).eval()
        count = sum(p.numel() for p in model.parameters())
        multiply_adds = macs(factory, params, args.size)
        times = []
        with torch.inference_mode():
            model(image)  # warm-up: allocator, oneDNN primitive caches
            for _ in range(args.repeats):
                start = time.perf_counter()
                model(image)
                times.append(time.perf_counter() - start)
        gmacs = f"{multiply_adds / 1e9:8.2f}" if multiply_adds is not None else f"{'n/a':>8}"
        print(
            f"{type_name:<28} {count / 1e6:>10.2f} {gmacs} {statistics.median(times) * 1e3:>10.1f} "
            f"{min(times) * 1e3:>9.1f}  {note}",
            flush=True,
        )
        del model
    after = os.getloadavg()
    print(f"load average after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")


if __name__ == "__main__":
    main()
