"""How much the quickstart model deblurs, on the blur it was trained on and on blur it never saw.

The held-out photos (the recipe's ``test_photos``, or ``--photos``) are blurred once with the
quickstart's own training mix and once with each held-out blur family, each pair drawn from its own
seed. Every checkpoint is scored on every set (whole images, the config's metrics) and one table is
printed per checkpoint: blurry-input and output PSNR/SSIM, the mean PSNR gain with its std over the
images and a bootstrap 95 % interval, each photo's mean gain and the worst image's change. With
several checkpoints (training seeds) a last table gives the mean gain over seeds and their spread.

    # train the quickstart for seeds 0 and 1 (one after the other), then score both
    python benchmarks/quickstart_quality.py --train --seeds 0 1
    # score given checkpoints (training seeds of one setting)
    python benchmarks/quickstart_quality.py --checkpoint runs/quickstart/checkpoints/best.pth
    # score on other photos (a validation split made from training photos)
    python benchmarks/quickstart_quality.py --checkpoint ckpt.pth --photos astronaut rocket

The held-out families are meant to stay out of the training mix: change ``HELD_OUT`` and the
recipe together. Nothing here is a test.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from deblurstack.checkpoint import load_stack_weights, read_checkpoint
from deblurstack.compose import resolve_config, resolve_node
from deblurstack.config import load_config
from deblurstack.engine.commands import EXAMPLES
from deblurstack.engine.evaluation import evaluate
from deblurstack.engine.prepare import EMBEDDED, synthesize

#: blur families the quickstart is not trained on (its recipe: camera shake up to 24 px, defocus
#: discs up to radius 4, camera sweeps of 9 to 15 frames up to 16 px, noise), applied without noise
HELD_OUT: dict[str, dict[str, Any]] = {
    # a smooth bell-shaped PSF: a different kernel profile from every trained one
    "gaussian": {"type": "gaussian_blur", "min_sigma": 1.0, "max_sigma": 2.5},
    # camera shake longer than any trained: 24 to 36 px paths on a 41 px canvas, full exposure
    "long shake": {
        "type": "mixed",
        "components": [
            {"type": "motion_blur", "kernel_size": 41, "max_length": 30.0, "exposure": 1.0},
            {"type": "motion_blur", "kernel_size": 41, "max_length": 36.0, "exposure": 1.0},
        ],
    },
    # 5 frames over a 20-28 px sweep: separate copies (ghosting), as averaging a slow video gives
    "ghosting": {"type": "camera_sweep", "frames": 5, "min_shift": 20.0, "max_shift": 28.0, "max_rotation": 2.0},
}
TRAINING_MIX = "training mix"
#: seeds of the sets' pairs (the recipe's test seed for the training mix, as the quickstart's own test split)
SET_SEEDS = {"gaussian": 1001, "long shake": 1002, "ghosting": 1003}


def make_sets(recipe: dict[str, Any], photos: list[str], pairs: int, folder: Path) -> dict[str, Path]:
    """Synthesize every set on ``photos`` (skipped where the folder is already there); name -> folder."""
    nodes = {TRAINING_MIX: recipe["blur"], **HELD_OUT}
    sets = {}
    for name, node in nodes.items():
        digest = hashlib.sha1(
            json.dumps([node, photos, pairs, recipe["max_side"]], sort_keys=True).encode()
        ).hexdigest()
        out = folder / f"{name.replace(' ', '_')}-{digest[:8]}"  # a changed recipe makes a new set
        if not (out / "target").is_dir():
            blur = resolve_node("synthesizer", node, f"sets.{name}").build()
            seed = recipe["seeds"]["test"] if name == TRAINING_MIX else SET_SEEDS[name]
            synthesize(EMBEDDED, out, blur, seed=seed, per_image=pairs, max_side=recipe["max_side"], names=photos)
        sets[name] = out
    return sets


def score(checkpoint: Path, sets: dict[str, Path], fallback_config: Path) -> dict[str, list[dict[str, Any]]]:
    """Per-image rows of the checkpoint on every set: the stack and metrics of the config it was trained with."""
    config = read_checkpoint(checkpoint).get("config") or load_config(fallback_config).data
    resolved = resolve_config({"stack": config["stack"], "metrics": config["metrics"]})
    stack = resolved.build_stack()
    load_stack_weights(stack, checkpoint)
    metrics = resolved.build_metrics()
    rows = {}
    for name, folder in sets.items():
        dataset = resolve_node(
            "dataset",
            {"type": "paired_folder", "input_dir": str(folder / "input"), "target_dir": str(folder / "target")},
            f"sets.{name}",
        ).build()
        rows[name] = evaluate(stack, dataset, metrics).rows
    return rows


def bootstrap(values: np.ndarray, rounds: int = 10000, seed: int = 0) -> tuple[float, float]:
    """95 % percentile interval of the mean by resampling the images."""
    means = np.random.default_rng(seed).choice(values, (rounds, len(values))).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    gains = np.array([r["psnr"] - r["input_psnr"] for r in rows])
    worst = int(np.argmin(gains))
    photos: dict[str, list[float]] = {}
    for row, gain in zip(rows, gains, strict=True):
        photos.setdefault(row["image"].rsplit("_", 1)[0], []).append(float(gain))
    return {
        "images": len(rows),
        "input_psnr": float(np.mean([r["input_psnr"] for r in rows])),
        "psnr": float(np.mean([r["psnr"] for r in rows])),
        "input_ssim": float(np.mean([r["input_ssim"] for r in rows])),
        "ssim": float(np.mean([r["ssim"] for r in rows])),
        "gain": float(gains.mean()),
        "gain_std": float(gains.std(ddof=1)) if len(gains) > 1 else 0.0,
        "gain_ci": bootstrap(gains),
        "photo_gains": {name: float(np.mean(values)) for name, values in photos.items()},
        "worst": (rows[worst]["image"], float(gains[worst])),
        "worse_images": int((gains < 0).sum()),
    }


def print_table(title: str, summaries: dict[str, dict[str, Any]]) -> None:
    print(f"\n### {title}\n")
    print(
        "| set | images | PSNR in → out | SSIM in → out | gain (dB) ± std | 95 % CI | per photo | worst image | worse |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in summaries.items():
        photos = ", ".join(f"{k} {v:+.2f}" for k, v in s["photo_gains"].items())
        print(
            f"| {name} | {s['images']} | {s['input_psnr']:.2f} → {s['psnr']:.2f} "
            f"| {s['input_ssim']:.3f} → {s['ssim']:.3f} "
            f"| {s['gain']:+.2f} ± {s['gain_std']:.2f} | [{s['gain_ci'][0]:+.2f}, {s['gain_ci'][1]:+.2f}] | {photos} "
            f"| {s['worst'][0]} {s['worst'][1]:+.2f} | {s['worse_images']}/{s['images']} |"
        )


def verdict(name: str, gains: list[float], cis: list[tuple[float, float]]) -> str:
    """Against the goals: >= +1.5 dB on the training mix, >= 0 dB (no harm on average) on held-out blur."""
    goal = 1.5 if name == TRAINING_MIX else 0.0
    mean = float(np.mean(gains))
    if all(low >= goal for low, _ in cis):
        return f"met (>= {goal:+.1f} dB, every seed's interval above)"
    if all(high < goal for _, high in cis):
        return f"not met (< {goal:+.1f} dB)"
    return f"{'met' if mean >= goal else 'not met'} on the mean, within noise of {goal:+.1f} dB"


def print_seed_table(per_seed: dict[str, dict[str, dict[str, Any]]]) -> None:
    print(f"\n### Over {len(per_seed)} training seeds\n")
    print("| set | mean gain (dB) | per seed | seed spread (max - min) | worst image over seeds | verdict |")
    print("|---|---|---|---|---|---|")
    names = next(iter(per_seed.values())).keys()
    for name in names:
        gains = [s[name]["gain"] for s in per_seed.values()]
        cis = [tuple(s[name]["gain_ci"]) for s in per_seed.values()]
        worst = min((s[name]["worst"] for s in per_seed.values()), key=lambda w: w[1])
        print(
            f"| {name} | {np.mean(gains):+.2f} | {', '.join(f'{g:+.2f}' for g in gains)} "
            f"| {max(gains) - min(gains):.2f} "
            f"| {worst[0]} {worst[1]:+.2f} | {verdict(name, gains, cis)} |"
        )


def train_quickstart(seed: int, work: Path, overrides: list[str]) -> tuple[Path, float]:
    """Run ``deblurstack quickstart`` (its data under ``work/data``, shared by the seeds).

    Returns the best checkpoint and the seconds the run took.
    """
    command = [
        str(Path(sys.executable).with_name("deblurstack")),
        "quickstart",
        "--data",
        str(work / "data"),
        "--runs-dir",
        str(work / f"runs_seed{seed}"),
        f"seed={seed}",
        *overrides,
    ]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return work / f"runs_seed{seed}" / "quickstart" / "checkpoints" / "best.pth", time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", nargs="*", default=[], help="checkpoints to score (e.g. one per training seed)")
    parser.add_argument("--train", action="store_true", help="run the quickstart first, once per --seeds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds with --train")
    parser.add_argument("--config", default=str(EXAMPLES / "quickstart.yaml"), help="the recipe (vars) to read")
    parser.add_argument("--photos", nargs="+", help="photos to blur and score (default: the recipe's test_photos)")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per photo in each set")
    parser.add_argument("--work", default="/tmp/quickstart_quality", help="folder for the sets and runs")
    parser.add_argument("--json", help="also write the summaries to this file")
    parser.add_argument(
        "overrides", nargs="*", help="overrides of the quickstart config (with --train, and for the recipe)"
    )
    args = parser.parse_args()

    recipe = load_config(args.config, args.overrides).data["vars"]
    photos = args.photos or list(recipe["test_photos"])
    work = Path(args.work)
    checkpoints = [Path(c) for c in args.checkpoint]
    timings = {}
    if args.train:
        for seed in args.seeds:
            checkpoint, seconds = train_quickstart(seed, work, args.overrides)
            checkpoints.append(checkpoint)
            timings[str(checkpoint)] = seconds
    if not checkpoints:
        parser.error("give --checkpoint or --train")
    sets = make_sets(recipe, photos, args.pairs, work / "sets" / "_".join(photos))
    print(f"photos: {', '.join(photos)}; {args.pairs} pairs per photo and set; sets under {work / 'sets'}")
    for name, node in {TRAINING_MIX: recipe["blur"], **HELD_OUT}.items():
        print(f"- {name}: {json.dumps(node)}")
    per_seed = {}
    for checkpoint in checkpoints:
        summaries = {name: summarize(rows) for name, rows in score(checkpoint, sets, Path(args.config)).items()}
        per_seed[str(checkpoint)] = summaries
        extra = f" (quickstart wall time {timings[str(checkpoint)]:.0f} s)" if str(checkpoint) in timings else ""
        print_table(f"{checkpoint}{extra}", summaries)
    if len(per_seed) > 1:
        print_seed_table(per_seed)
    if args.json:
        Path(args.json).write_text(json.dumps({"photos": photos, "timings": timings, "results": per_seed}, indent=1))


if __name__ == "__main__":
    main()
