"""Training step of the supervised (or phased) trainer vs a bare forward + backward + optimizer step.

The trainer runs on a synthetic paired dataset (real photos, synthetic blur) with its data loader,
hooks, logging and schedule; a lifecycle plugin time-stamps every step. The bare loop runs the
same stack and loss on one fixed batch of the same size. Blocks of both alternate, and the
median per-step times give the ratio (goal: <= 1.10). ``--trainer phased`` runs the phased trainer with two
phases that alternate every 5 steps on the same data, each with its own optimizer (BladeNet's schedule).
``--channels-last`` sets the trainer's ``channels_last`` while the bare loop keeps the default layout: the ratio is
then the layout's gain net of the trainer's overhead.

    python benchmarks/train_step_overhead.py [--backbone unet.small] [--patch 128] [--batch 4] [--trainer phased]
                                             [--channels-last]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
import yaml

from deblurstack import build_stack, hookimpl
from deblurstack.engine.commands import train
from deblurstack.engine.prepare import EMBEDDED, synthesize
from deblurstack.registry import get_plugin_manager


class StepClock:
    """Lifecycle plugin: the time between consecutive optimizer steps."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    @hookimpl
    def deblurstack_train_step_end(self) -> None:
        self.stamps.append(time.perf_counter())

    def intervals(self, skip: int = 3) -> list[float]:
        return [b - a for a, b in zip(self.stamps[skip:], self.stamps[skip + 1 :], strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="unet.small")
    parser.add_argument("--patch", type=int, default=128)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40, help="steps per block (the first 3 are warm-up)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating blocks of each")
    parser.add_argument("--trainer", choices=("supervised", "phased"), default="supervised")
    parser.add_argument("--no-cache", action="store_true", help="decode the PNG pairs every step")
    parser.add_argument("--channels-last", action="store_true", help="the trainer (only) trains in channels_last")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="deblurstack-bench-"))
    blur = get_plugin_manager().get("synthesizer", "motion_blur").load_factory()()
    synthesize(EMBEDDED, work / "data", blur, names=["astronaut", "coffee", "rocket", "chelsea"], max_side=256)
    config = {
        "name": "bench",
        "seed": 0,
        "stack": {"backbone": {"type": args.backbone}, "losses": [{"type": "psnr"}]},
        "data": {
            "train": {
                "type": "paired_folder",
                "input_dir": str(work / "data/input"),
                "target_dir": str(work / "data/target"),
                "patch_size": args.patch,
                "augment": True,
                "cache": not args.no_cache,  # decoded pairs in memory: the loader, not PNG decoding, is measured
            }
        },
        "train": {
            "type": "supervised",
            "iterations": args.steps,
            "batch_size": args.batch,
            "log_every": 1_000_000,
            "grad_clip": 0.01,
            "optimizer": "adamw",
            "lr": 1e-4,
        },
    }
    if args.trainer == "phased":
        phase = {"split": "train", "iterations": 5, "batch_size": args.batch, "grad_clip": 0.01}
        phase |= {"optimizer": "adamw", "lr": 1e-4}
        config["train"] = {
            "type": "phased",
            "iterations": args.steps,
            "cycles": args.steps,
            "log_every": 1_000_000,
            "phases": [{"name": "a", **phase}, {"name": "b", **phase}],
        }
    config["train"]["channels_last"] = args.channels_last
    config_path = work / "bench.yaml"
    config_path.write_text(yaml.safe_dump(config))

    stack = build_stack(config_path)
    optimizer = torch.optim.AdamW(stack.parameters(), lr=1e-4)
    batch = {
        "input": torch.rand(args.batch, 3, args.patch, args.patch),
        "target": torch.rand(args.batch, 3, args.patch, args.patch),
    }

    def bare_block() -> list[float]:
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            total, _ = stack.compute_loss(stack.run(batch["input"]), batch)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            torch.nn.utils.clip_grad_norm_(stack.parameters(), 0.01)
            optimizer.step()
            times.append(time.perf_counter() - start)
        return times[3:]

    clock = StepClock()
    get_plugin_manager().register(clock, name="step_clock")
    trainer_times, bare_times = [], []
    for index in range(args.rounds):
        bare_times += bare_block()
        clock.stamps.clear()
        train(config_path, runs_dir=work / f"runs{index}", device="cpu")
        trainer_times += clock.intervals()

    trainer, bare = statistics.median(trainer_times), statistics.median(bare_times)
    print(
        f"backbone {args.backbone}, batch {args.batch} x {args.patch}x{args.patch}, {torch.get_num_threads()} threads"
    )
    print(f"  bare forward+backward+step  median {bare * 1e3:8.1f} ms ({len(bare_times)} steps)")
    layout = " (channels_last)" if args.channels_last else ""
    print(
        f"  {args.trainer + ' trainer step' + layout:27s} median {trainer * 1e3:8.1f} ms ({len(trainer_times)} steps)"
    )
    verdict = "met" if trainer / bare <= 1.10 else "NOT met"
    goal = "the layout's gain net of the overhead" if args.channels_last else f"goal <= 1.10: {verdict}"
    print(f"  median ratio trainer / bare = {trainer / bare:.3f}  ({goal})")


if __name__ == "__main__":
    main()
