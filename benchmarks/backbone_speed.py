"""Forward time of every built-in backbone and preset on CPU against its matrix-multiply floor: 256x256, batch 1.

Each row is a backbone of the registry, with its defaults (when they differ from every preset) and with each
preset, then the BladeNet stack (lbp + bsa + unet.bladenet). Per row: parameters, MACs (torch.utils.flop_counter
on the meta device: convolutions and matrix products), the floor (those MACs at the best float32 rate measured in
this run before and after the rows, of torch.mm and of a dense 3x3 convolution: oneDNN's convolutions beat
torch.mm on some CPUs, and a floor at the torch.mm rate alone would not be one), the median forward time in
eval mode under torch.inference_mode after one warm-up run, and the time as a multiple of the floor: a row far
above the others is a backbone with the most left to gain. Rows run one after the other (a big preset takes
seconds a run), so the load average is printed before and after.

    python benchmarks/backbone_speed.py [--only 'nafnet*'] [--repeats 3] [--size 256] [--threads N]
"""

from __future__ import annotations

import argparse
import fnmatch
import inspect
import os
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from deblurstack import build_stack
from deblurstack.registry import get_plugin_manager

from _matmul_floor import conv_rate, gemm_rate, meta_macs

STACKS = {"stack lbp + bsa + unet.bladenet": [{"type": "lbp"}, {"type": "bsa"}]}


def rows(pattern: str | None) -> list[tuple[str, Callable[[], nn.Module], str]]:
    """(name, builder, note) for every backbone and preset, then every stack of STACKS, whose name matches."""
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
                found.append((type_name, lambda factory=factory, params=params: factory(**params), note))
    for name, priors in STACKS.items():
        if pattern is None or fnmatch.fnmatchcase(name, pattern):
            backbone = name.rsplit(" ", 1)[-1]
            found.append(
                (name, lambda p=priors, b=backbone: build_stack({"stack": {"priors": p, "backbone": {"type": b}}}), "")
            )
    return found


def counted_macs(build: Callable[[], nn.Module], size: int) -> float | None:
    """Multiply-accumulates of one forward on the meta device (None when a model cannot run there)."""
    try:
        return meta_macs(lambda: build().eval(), size)
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
    rates = [gemm_rate(), conv_rate()]
    print(
        f"{args.size}x{args.size}, batch 1, CPU, {args.threads} threads, inference_mode, {args.repeats} runs each "
        f"after a warm-up; torch {torch.__version__}; load average {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}"
    )
    header = (
        f"{'backbone':<32} {'params (M)':>10} {'GMACs':>8} {'median ms':>10} {'min ms':>9} {'floor ms':>9} "
        f"{'x floor':>8}  note"
    )
    print(header)
    print("-" * len(header))
    image = torch.rand(1, 3, args.size, args.size)
    measured = []
    for name, build, note in selected:
        torch.manual_seed(0)
        model = build().eval()
        count = sum(p.numel() for p in model.parameters())
        multiply_adds = counted_macs(build, args.size)
        times = []
        with torch.inference_mode():
            model(image)  # warm-up: allocator, oneDNN primitive caches
            for _ in range(args.repeats):
                start = time.perf_counter()
                model(image)
                times.append(time.perf_counter() - start)
        measured.append((name, count, multiply_adds, times, note))
        print(f"  measured {name}", flush=True)
        del model
    rates += [gemm_rate(), conv_rate()]
    rate = max(rates)
    for name, count, multiply_adds, times, note in measured:
        median = statistics.median(times)
        if multiply_adds is None:
            gmacs = floor = over = f"{'n/a':>8}"
        else:
            seconds = 2 * multiply_adds / rate
            gmacs, floor, over = f"{multiply_adds / 1e9:8.2f}", f"{seconds * 1e3:9.1f}", f"{median / seconds:8.2f}"
        print(
            f"{name:<32} {count / 1e6:>10.2f} {gmacs} {median * 1e3:>10.1f} {min(times) * 1e3:>9.1f} {floor} "
            f"{over}  {note}"
        )
    after = os.getloadavg()
    mm, conv = (f"{rates[i] / 1e9:.1f} and {rates[i + 2] / 1e9:.1f}" for i in (0, 1))
    print(
        f"floor at {rate / 1e9:.1f} GFLOP/s, the best float32 rate measured (torch.mm before and after the rows: "
        f"{mm}; 3x3 convolution: {conv}); load average after: {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}"
    )


if __name__ == "__main__":
    main()
