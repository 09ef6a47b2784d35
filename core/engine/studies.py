"""Studies: ablations over variants, seeds and test sets, their results, paper-style tables and paired comparisons.

An ablation trains every variant of a config under every seed (a *trial*: the run ``<name>-<variant>-s<seed>``)
and scores each trained model on every test split. A trial is keyed by a hash of its explicit config
(:func:`config_key`), so a killed or extended ablation trains only what is missing. Its folder::

    runs/<name>-ablation/
        runs.json          the trials: key -> variant, seed, run folder, weights, status (done/failed) and reason
        scores/<variant>-s<seed>/<split>-<key>/   each trial's evaluation of a split (per_image.csv, summary.md)
        results.csv        variant, seed, split, metric, value, status, reason: one row a number (the blurry
                           input is the variant ``input`` without a seed; a failed trial has rows without values)
        results.json       the same rows, the metrics' directions and protocols, the trials, the test splits' data
        per_image.csv      variant, seed, split, image, metric, value
        table.md, table.tex   rows: variants (the blurry input first); column groups: test splits; mean ± std
        report.html, report/*.png    (:mod:`deblurstack.engine.report`)
        jobs/              with ``jobs`` > 1: each trial's config (<run>.yaml) and its processes' output (<run>.*.log)

Progress: one bar over the trials (done / total, each running trial's phase, the ETA) above the trials' own
training bars. ``jobs`` > 1 runs trials in parallel, each in its own ``deblurstack train``/``test`` subprocesses on
one device; the results are collected in the same order, so the files equal those of the sequential default.

Nothing here imports torch at load time: tables and intervals are plain numbers (numpy).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import queue
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from deblurstack.data import write_bytes_atomic
from deblurstack.errors import ConfigError

#: the variant name of the blurry input's scores (the first row of every table)
INPUT = "input"
INPUT_LABEL = "blurry input"
RESAMPLES = 10_000
BOOTSTRAP_SEED = 0


# ---------------------------------------------------------------------- records


@dataclass
class MetricInfo:
    """What a table needs to know of a metric column: its direction and how it was computed."""

    higher_is_better: bool = True
    protocol: str = "not stated"


@dataclass
class Trial:
    """One (variant, seed): its key, run folder, weights and whether it trained (``done``) or ``failed``."""

    variant: str
    seed: int
    key: str
    run: str = ""
    weights: str = ""
    status: str = "pending"
    reason: str = ""
    failed_splits: dict[str, str] = field(default_factory=dict)  # split -> why scoring it failed


@dataclass
class Score:
    """One number of the long results: a (variant, seed) mean of a metric on a split (seed None: the input)."""

    variant: str
    seed: int | None
    split: str
    metric: str
    value: float


@dataclass
class ImageScore:
    variant: str
    seed: int | None
    split: str
    image: str
    metric: str
    value: float


@dataclass
class Study:
    """An ablation's results: what tables, comparisons and reports are made from."""

    title: str
    variants: list[str]
    seeds: list[int]
    splits: list[str]
    metrics: dict[str, MetricInfo]  # column -> info, in column order
    scores: list[Score] = field(default_factory=list)
    images: list[ImageScore] = field(default_factory=list)
    trials: list[Trial] = field(default_factory=list)
    split_data: dict[str, Any] = field(default_factory=dict)  # split -> its explicit data node
    source: str = ""  # the config file
    folder: Path | None = None

    # ------------------------------------------------------------------ files

    def save(self, folder: Path) -> None:
        """Write results.csv, results.json and per_image.csv atomically."""
        rows = [{**asdict(s), "seed": _seed_text(s.seed), "status": "done", "reason": ""} for s in self.scores]
        for trial in self.trials:
            failures = {s: trial.reason for s in self.splits} if trial.status == "failed" else trial.failed_splits
            rows += [
                {"variant": trial.variant, "seed": str(trial.seed), "split": split, "metric": "", "value": ""}
                | {"status": "failed", "reason": reason}
                for split, reason in failures.items()
            ]
        columns = ["variant", "seed", "split", "metric", "value", "status", "reason"]
        write_bytes_atomic(folder / "results.csv", _csv(columns, rows))
        image_rows = [{**asdict(s), "seed": _seed_text(s.seed)} for s in self.images]
        write_bytes_atomic(
            folder / "per_image.csv", _csv(["variant", "seed", "split", "image", "metric", "value"], image_rows)
        )
        document = {
            "title": self.title,
            "source": self.source,
            "variants": self.variants,
            "seeds": self.seeds,
            "splits": self.splits,
            "metrics": {name: asdict(info) for name, info in self.metrics.items()},
            "split_data": self.split_data,
            "trials": [asdict(t) for t in self.trials],
            "results": [{**r, "value": _json_value(r["value"])} for r in rows],
        }
        write_bytes_atomic(
            folder / "results.json", (json.dumps(document, indent=1, default=_json_number) + "\n").encode()
        )

    @classmethod
    def load(cls, folder: Path) -> Study:
        """The study an ablation wrote to ``folder`` (results.json and per_image.csv)."""
        document = _read_json(folder / "results.json")
        scores = [
            Score(r["variant"], _seed_value(r["seed"]), r["split"], r["metric"], _float(r["value"]))
            for r in document["results"]
            if r["status"] == "done"
        ]
        with open(folder / "per_image.csv", newline="") as file:
            images = [
                ImageScore(
                    r["variant"], _seed_value(r["seed"]), r["split"], r["image"], r["metric"], _float(r["value"])
                )
                for r in csv.DictReader(file)
            ]
        return cls(
            title=document["title"],
            variants=document["variants"],
            seeds=document["seeds"],
            splits=document["splits"],
            metrics={name: MetricInfo(**info) for name, info in document["metrics"].items()},
            scores=scores,
            images=images,
            trials=[Trial(**t) for t in document["trials"]],
            split_data=document.get("split_data", {}),
            source=document.get("source", ""),
            folder=folder,
        )

    # ------------------------------------------------------------------ views

    def rows(self) -> list[str]:
        """Table rows: the blurry input (when scored), then the variants in order."""
        return ([INPUT] if any(s.variant == INPUT for s in self.scores) else []) + list(self.variants)

    def failures(self) -> list[str]:
        """One line per failed trial or scoring: ``variant, seed S: reason`` (``on split X`` for a scoring)."""
        lines = []
        for trial in self.trials:
            if trial.status == "failed":
                lines.append(f"{trial.variant}, seed {trial.seed}: {trial.reason}")
            lines += [f"{trial.variant}, seed {trial.seed} on {s}: {why}" for s, why in trial.failed_splits.items()]
        return lines

    def per_image(self, variant: str, split: str, metric: str) -> dict[tuple[int | None, str], float]:
        """(seed, image) -> value of one variant's metric on a split."""
        return {
            (s.seed, s.image): s.value
            for s in self.images
            if s.variant == variant and s.split == split and s.metric == metric
        }


# ---------------------------------------------------------------------- tables


@dataclass(frozen=True)
class Cell:
    """A table cell: the mean over seeds, the sample standard deviation (ddof 1; None for one seed)."""

    mean: float
    std: float | None
    n: int
    failed: int = 0  # seeds whose trial (or scoring of this split) failed


def summarize(study: Study) -> dict[tuple[str, str, str], Cell]:
    """(variant, split, metric) -> :class:`Cell` over the seeds (NaN means, e.g. a metric without regions, left out)."""
    values: dict[tuple[str, str, str], list[float]] = {}
    for score in study.scores:
        values.setdefault((score.variant, score.split, score.metric), []).append(score.value)
    failed: dict[tuple[str, str], int] = {}
    for trial in study.trials:
        for split in study.splits:
            if trial.status == "failed" or split in trial.failed_splits:
                failed[trial.variant, split] = failed.get((trial.variant, split), 0) + 1
    cells = {}
    for variant in study.rows():
        for split in study.splits:
            for metric in study.metrics:
                finite = [v for v in values.get((variant, split, metric), []) if not math.isnan(v)]
                count = failed.get((variant, split), 0)
                if finite:
                    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
                    cells[variant, split, metric] = Cell(float(np.mean(finite)), std, len(finite), count)
                else:
                    cells[variant, split, metric] = Cell(math.nan, None, 0, count)
    return cells


def best_rows(study: Study, cells: Mapping[tuple[str, str, str], Cell]) -> dict[tuple[str, str], set[str]]:
    """(split, metric) -> the variants with the best mean (the blurry input competes not), by the metric's direction."""
    best = {}
    for split in study.splits:
        for metric, info in study.metrics.items():
            means = {v: cells[v, split, metric].mean for v in study.variants if (v, split, metric) in cells}
            means = {v: m for v, m in means.items() if not math.isnan(m)}
            if means:
                top = max(means.values()) if info.higher_is_better else min(means.values())
                best[split, metric] = {v for v, m in means.items() if m == top}
    return best


def markdown_table(study: Study) -> str:
    """The paper's table in Markdown, with the seeds, the protocols and the failures under it."""
    cells, columns = summarize(study), _columns(study)
    best = best_rows(study, cells)
    several = len(study.splits) > 1
    header = [
        f"{split}: {metric} {_arrow(study, metric)}" if several else f"{metric} {_arrow(study, metric)}"
        for split, metric in columns
    ]
    lines = [
        f"# {study.title}: ablation on {', '.join(f'data.{s}' for s in study.splits)}",
        "",
        "| variant | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for variant in study.rows():
        row = []
        for split, metric in columns:
            text = format_cell(cells[variant, split, metric])
            row.append(f"**{text}**" if variant in best.get((split, metric), ()) else text)
        lines.append(f"| {_label(variant)} | " + " | ".join(row) + " |")
    lines += ["", _spread_note(study), "", "## Protocol", ""]
    lines += [f"- `{name}`: {info.protocol}" for name, info in _protocols(study).items()]
    if failures := study.failures():
        lines += ["", "## Failed", ""] + [f"- {line}" for line in failures]
    return "\n".join(lines) + "\n"


def latex_table(study: Study) -> str:
    """The same table for a paper: booktabs, a column group (``\\multicolumn``) per test split."""
    cells, columns = summarize(study), _columns(study)
    best = best_rows(study, cells)
    per_split = len(study.metrics)
    lines = [
        "% needs \\usepackage{booktabs}",
        "\\begin{table}[t]",
        "\\centering",
        "\\begin{tabular}{l" + (" " + "c" * per_split) * len(study.splits) + "}",
        "\\toprule",
        " & " + " & ".join(f"\\multicolumn{{{per_split}}}{{c}}{{{_tex(s)}}}" for s in study.splits) + " \\\\",
        " ".join(f"\\cmidrule(lr){{{2 + i * per_split}-{1 + (i + 1) * per_split}}}" for i in range(len(study.splits))),
        "variant & " + " & ".join(f"{_tex(m)} {_tex(_arrow(study, m))}" for _, m in columns) + " \\\\",
        "\\midrule",
    ]
    for variant in study.rows():
        row = []
        for split, metric in columns:
            text = format_cell(cells[variant, split, metric]).replace(" ± ", " $\\pm$ ")
            row.append(f"\\textbf{{{text}}}" if variant in best.get((split, metric), ()) else text)
        lines.append(f"{_tex(_label(variant))} & " + " & ".join(row) + " \\\\")
        if variant == INPUT:
            lines.append("\\midrule")
    protocols = "; ".join(f"{name}: {info.protocol}" for name, info in _protocols(study).items())
    lines += [
        "\\bottomrule",
        "\\end{tabular}",
        f"\\caption{{{_tex(study.title)}. {_tex(_spread_note(study))} {_tex(protocols)}}}",
        "\\end{table}",
    ]
    return "\n".join(lines) + "\n"


def format_cell(cell: Cell) -> str:
    """``mean ± std`` (the mean alone for one seed; ``failed`` when no seed has a number), two decimals from 10 up."""
    if cell.n == 0:
        return "failed" if cell.failed else "–"
    digits = 2 if abs(cell.mean) >= 10 else 4
    text = f"{cell.mean:.{digits}f}" + (f" ± {cell.std:.{digits}f}" if cell.std is not None else "")
    return text + (f" ({cell.n} of {cell.n + cell.failed})" if cell.failed else "")


# ---------------------------------------------------------------------- paired comparisons


@dataclass
class Comparison:
    """``a`` minus ``b`` on the same images and seeds: the mean difference and its bootstrap interval."""

    a: str
    b: str
    split: str
    metric: str
    higher_is_better: bool
    mean: float
    low: float
    high: float
    images: int
    seeds: list[int]
    better: int  # images on which a scores better than b (by the metric's direction)
    worse: int
    equal: int
    level: float = 0.95
    resamples: int = RESAMPLES

    def text(self) -> str:
        seeds = ", ".join(map(str, self.seeds)) or "none"
        return (
            f"{self.a} − {self.b} on {self.split} {self.metric}: {self.mean:+.4f} "
            f"({self.level:.0%} CI {self.low:+.4f} to {self.high:+.4f}; bootstrap over {self.images} images, "
            f"{self.resamples} resamples; seeds {seeds}); {self.a} better on {self.better}, "
            f"worse on {self.worse}, equal on {self.equal} images"
        )


def bootstrap_interval(
    values: Sequence[float], resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (resampled with replacement; numpy, fixed seed)."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("no values to resample")
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // data.size)  # bounded memory for large test sets
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = data[rng.integers(0, data.size, size=(stop - start, data.size))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


def paired_differences(
    a: Mapping[tuple[int | None, str], float], b: Mapping[tuple[int | None, str], float]
) -> tuple[dict[str, float], list[int]]:
    """Image -> mean over the shared seeds of ``a - b``; and those seeds. A seed of None (the blurry input) pairs
    with every seed of the other side."""

    def expand(values, seeds):
        return {(s, i): v for (seed, i), v in values.items() for s in ([seed] if seed is not None else seeds)}

    seeds = sorted({s for s, _ in a if s is not None} | {s for s, _ in b if s is not None})
    left, right = expand(a, seeds or [None]), expand(b, seeds or [None])
    per_image: dict[str, list[float]] = {}
    used = set()
    for key in sorted(left.keys() & right.keys(), key=str):
        difference = left[key] - right[key]
        if not math.isnan(difference):
            per_image.setdefault(key[1], []).append(difference)
            used.add(key[0])
    return {image: float(np.mean(d)) for image, d in per_image.items()}, sorted(s for s in used if s is not None)


def compare(study: Study, a: str, b: str, split: str | None = None, metric: str | None = None) -> Comparison:
    """Variant ``a`` against ``b`` (either may be ``input``) on one split and metric, paired over images and seeds."""
    known = study.rows()
    for name in (a, b):
        if name not in known:
            raise ConfigError(f"--a/--b {name!r}: no such variant (variants: {', '.join(known)})")
    split = split or study.splits[0]
    if split not in study.splits:
        raise ConfigError(f"--split {split!r}: not scored in this study (splits: {', '.join(study.splits)})")
    metric = metric or ("psnr" if "psnr" in study.metrics else next(iter(study.metrics)))
    if metric not in study.metrics:
        raise ConfigError(f"--metric {metric!r}: not scored in this study (metrics: {', '.join(study.metrics)})")
    differences, seeds = paired_differences(study.per_image(a, split, metric), study.per_image(b, split, metric))
    if not differences:
        raise ConfigError(f"{a} and {b}: no image of data.{split} has a {metric} score from both")
    values = list(differences.values())
    low, high = bootstrap_interval(values)
    sign = 1 if study.metrics[metric].higher_is_better else -1
    return Comparison(
        a,
        b,
        split,
        metric,
        study.metrics[metric].higher_is_better,
        float(np.mean(values)),
        low,
        high,
        len(values),
        seeds,
        better=sum(sign * d > 0 for d in values),
        worse=sum(sign * d < 0 for d in values),
        equal=sum(d == 0 for d in values),
    )


# ---------------------------------------------------------------------- running an ablation


@dataclass
class AblationResult:
    """What an ablation did: its folder, tables and report, and how many trials it trained, skipped or lost."""

    folder: Path
    study: Study
    trained: int = 0
    skipped: int = 0  # finished before (same key): not retrained
    resumed: int = 0  # of those trained: continued from the checkpoint of a run an earlier ablation left
    failed: int = 0
    scored: int = 0
    reused: int = 0  # evaluations already in the folder
    report: Path | None = None

    @property
    def table(self) -> Path:
        return self.folder / "table.md"

    def summary(self) -> str:
        return (
            f"ablation {self.folder}: trained {self.trained}"
            + (f" ({self.resumed} resumed)" if self.resumed else "")
            + f", skipped {self.skipped} (finished before), "
            f"failed {self.failed}; scored {self.scored}, reused {self.reused} evaluations"
        )


def config_key(data: Mapping[str, Any], scoring_only: Iterable[str] = ()) -> str:
    """A trial's key: sha256 of its explicit config without ``vars`` (already interpolated where used) and
    without the data splits it is only scored on, so adding or changing test sets retrains nothing."""
    dropped = set(scoring_only)
    kept = {key: value for key, value in data.items() if key != "vars"}
    if isinstance(kept.get("data"), Mapping):
        kept["data"] = {split: node for split, node in kept["data"].items() if split not in dropped}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def ablation_settings(
    config: str | Path,
    section: Mapping[str, Any],
    base_seed: int,
    seeds: int | Sequence[int] | None,
    splits: Sequence[str] | None,
) -> tuple[list[int], list[str]]:
    """The seeds and test splits: the arguments, else the file's ``ablation`` section, else the config's seed
    and ``test``. A count N means the seeds ``seed``, ``seed + 1`` ... ``seed + N - 1``."""
    unknown = sorted(set(section) - {"seeds", "splits"})
    if unknown:
        raise ConfigError(f"{config}: ablation.{unknown[0]}: unknown setting (settings: seeds, splits)")
    seeds = section.get("seeds", 1) if seeds is None else seeds
    splits = section.get("splits", ["test"]) if splits is None else splits
    if isinstance(splits, str):
        splits = [splits]
    if isinstance(seeds, bool) or not (
        (isinstance(seeds, int) and seeds >= 1)
        or (
            isinstance(seeds, Sequence) and seeds and all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)
        )
    ):
        raise ConfigError(f"{config}: ablation.seeds: a count of at least 1 or a list of integers, got {seeds!r}")
    chosen = list(range(base_seed, base_seed + seeds)) if isinstance(seeds, int) else list(dict.fromkeys(seeds))
    if not splits or not all(isinstance(s, str) and s for s in splits):
        raise ConfigError(f"{config}: ablation.splits: a list of data split names, got {splits!r}")
    return chosen, list(dict.fromkeys(splits))


def run_ablation(
    config: str | Path,
    overrides: Sequence[str] = (),
    *,
    variants: Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    splits: Sequence[str] | None = None,
    runs_dir: str | Path = "runs",
    device: str = "auto",
    jobs: int | None = None,
    devices: Sequence[str] | None = None,
    report: bool = True,
    log: Callable[[str], None] | None = None,
) -> AblationResult:
    """Train every (variant, seed) not finished before, score it on every split, write results, tables, report.

    By default the trials run one after the other in this process, on ``device``. ``jobs`` > 1 runs that many at
    once, each trial's training and scorings as ``python -m deblurstack train|test`` subprocesses on one of
    ``devices`` (default: every CUDA device, else ``device``; fewer devices than jobs are shared in turn), their
    configs and output in ``<folder>/jobs/``. ``jobs`` defaults to the number of ``devices`` given, else 1. Either
    way the results are collected in the plan's order, so the files are the same.
    """
    from deblurstack.engine.distributed import resolve_device

    jobs = jobs if jobs is not None else len(devices) if devices else 1
    if jobs < 1:
        raise ConfigError(f"--jobs {jobs}: expected at least 1 trial at a time")
    slots = _devices(devices, device)
    for slot in slots:
        resolve_device(slot)  # a bad name is refused before anything trains
    title, folder, names, seed_list, split_list, plan = _plan(config, overrides, variants, seeds, splits, runs_dir)
    manifest_path = folder / "runs.json"
    manifest = _read_json(manifest_path) if manifest_path.exists() else {}
    metrics = plan[0][2].build_metrics()
    from deblurstack.engine.evaluation import protocols

    texts = protocols(metrics)
    result = AblationResult(folder, Study(title, names, seed_list, split_list, {}, source=str(config), folder=folder))
    study = result.study
    study.split_data = {s: plan[0][2].data["data"][s] for s in split_list}
    progress = _Progress(len(plan))
    log = log or progress.write
    runner: _InProcess | _Subprocesses = _InProcess() if jobs == 1 else _Subprocesses(folder / "jobs")
    lock = threading.Lock()

    def run_trial(item: tuple[Trial, Any, Any, list[str]], on: str) -> tuple[str, dict[str, Any]]:
        """Train one trial and score it on every split (in a worker thread when ``jobs`` > 1)."""
        trial, trial_config, resolved, scoring_only = item
        trained = _train_trial(
            trial, trial_config, manifest.get(trial.key), Path(runs_dir), scoring_only, on, runner, progress, log
        )
        with lock:
            manifest[trial.key] = asdict(trial) | {"failed_splits": {}}
            write_bytes_atomic(manifest_path, (json.dumps(manifest, indent=1) + "\n").encode())
        scores = {}
        if trial.status == "done":
            for split in split_list:
                out = (
                    folder
                    / "scores"
                    / f"{trial.variant}-s{trial.seed}"
                    / f"{split}-{_score_key(trial, resolved, split)}"
                )
                scores[split] = _score(trial, trial_config, split, out, on, runner, progress, log)
        progress.done(trial)
        return trained, scores

    try:
        if jobs == 1:
            outcomes = [run_trial(item, slots[0]) for item in plan]
        else:
            free: queue.SimpleQueue[str] = queue.SimpleQueue()
            for index in range(jobs):
                free.put(slots[index % len(slots)])

            def on_free_device(item: tuple[Trial, Any, Any, list[str]]) -> tuple[str, dict[str, Any]]:
                on = free.get()
                try:
                    return run_trial(item, on)
                finally:
                    free.put(on)

            pool = ThreadPoolExecutor(jobs)
            try:
                outcomes = list(pool.map(on_free_device, plan))
            finally:
                pool.shutdown(cancel_futures=True)  # interrupted (Ctrl-C): start no further trial
    finally:
        progress.close()

    # collect in the plan's order, whatever order the trials finished in
    input_scored: set[str] = set()
    for (trial, *_), (trained, scores) in zip(plan, outcomes, strict=True):
        study.trials.append(trial)
        result.trained += trained in ("trained", "resumed")
        result.resumed += trained == "resumed"
        result.skipped += trained == "skipped"
        result.failed += trained == "failed"
        for split, (rows, scored) in scores.items():
            result.scored += scored == "scored"
            result.reused += scored == "reused"
            if rows is not None:
                _add_rows(study, trial.variant, trial.seed, split, rows, with_input=split not in input_scored)
                input_scored.add(split)
    columns = list(dict.fromkeys(s.metric for s in study.scores))
    study.metrics = {column: _metric_info(column, metrics, texts) for column in columns}
    finish(study, folder, report=report)
    result.report = folder / "report.html" if report else None
    return result


def plan_trials(
    config: str | Path,
    overrides: Sequence[str] = (),
    *,
    variants: Sequence[str] | None = None,
    seeds: int | Sequence[int] | None = None,
    splits: Sequence[str] | None = None,
    runs_dir: str | Path = "runs",
) -> list[Path]:
    """Write every trial's config to ``<folder>/jobs/<run>.yaml`` and return the files; nothing trains. Each is a
    plain ``deblurstack train`` config (to run under torchrun or a cluster's scheduler): the same ablation command
    afterwards finds the finished runs (same name and explicit config) and only scores them."""
    _, folder, _, _, _, plan = _plan(config, overrides, variants, seeds, splits, runs_dir)
    return [_Subprocesses(folder / "jobs").config_file(trial_config) for _, trial_config, _, _ in plan]


def _plan(
    config: str | Path,
    overrides: Sequence[str],
    variants: Sequence[str] | None,
    seeds: int | Sequence[int] | None,
    splits: Sequence[str] | None,
    runs_dir: str | Path,
) -> tuple[str, Path, list[str], list[int], list[str], list[tuple[Trial, Any, Any, list[str]]]]:
    """The study's title, folder, variants, seeds and splits, and its trials: (trial, config, resolved config,
    splits only scored on), every trial's config resolved (and so checked) before anything trains."""
    from deblurstack.compose import resolve_config
    from deblurstack.config import load_config

    base = load_config(config, overrides)
    names = list(variants or base.variants)
    if not names:
        raise ConfigError(f"{config}: variants: none defined (an ablation runs each variant of the file)")
    for name in names:
        if name not in base.variants:
            raise ConfigError(f"{config}: --variants: no variant {name!r} (variants: {', '.join(base.variants)})")
    seed_list, split_list = ablation_settings(config, base.ablation, int(base.data.get("seed", 0)), seeds, splits)
    defined = list(base.data.get("data") or {})
    for split in split_list:
        if split not in defined:
            raise ConfigError(
                f"{config}: --splits: no split {split!r} (splits defined: {', '.join(defined) or 'none'})"
            )
    title = str(base.data.get("name") or Path(config).stem)
    folder = Path(runs_dir) / f"{title}-ablation"
    plan = []
    for name in names:
        for seed in seed_list:
            trial_config = load_config(config, [*overrides, f"seed={seed}"], name)
            trial_config.data["name"] = f"{trial_config.data['name']}-s{seed}"
            resolved = resolve_config(trial_config)
            if resolved.trains_own_network:
                raise ConfigError(
                    f"{config}: train.type: trainer {resolved.trainer.type!r} trains a network of its own, which an "
                    "ablation cannot score as a deblurring stack; train its variants with deblurstack train --variant"
                )
            scoring_only = [s for s in split_list if s not in _training_splits(resolved)]
            plan.append(
                (Trial(name, seed, config_key(resolved.data, scoring_only)), trial_config, resolved, scoring_only)
            )
    return title, folder, names, seed_list, split_list, plan


def finish(study: Study, folder: Path, report: bool = True) -> None:
    """Write the study's results, its Markdown and LaTeX tables and (``report``) its HTML report."""
    study.save(folder)
    write_bytes_atomic(folder / "table.md", markdown_table(study).encode())
    write_bytes_atomic(folder / "table.tex", latex_table(study).encode())
    if report:
        from deblurstack.engine.report import write_report

        write_report(study, folder)


# ---------------------------------------------------------------------- progress and parallel trials


class _Progress:
    """The ablation's bar at position 0: trials done / total, what each running trial does, the ETA. A trial's
    training bar (:class:`~deblurstack.engine.loop.TrainingLoop`'s) takes tqdm's next free position, below it."""

    def __init__(self, total: int) -> None:
        self.bar = tqdm(total=total, desc="ablation", unit="trial", position=0, dynamic_ncols=True)
        self.doing: dict[str, str] = {}
        self.lock = threading.Lock()

    def phase(self, trial: Trial, what: str) -> None:
        """Show that ``trial`` is now ``what`` (training, scoring a split)."""
        with self.lock:
            self.doing[f"{trial.variant} seed {trial.seed}"] = what
            self.bar.set_postfix_str("; ".join(f"{name}: {now}" for name, now in self.doing.items()))

    def done(self, trial: Trial) -> None:
        """Count ``trial`` as done (trained or skipped, and scored)."""
        with self.lock:
            self.doing.pop(f"{trial.variant} seed {trial.seed}", None)
            self.bar.set_postfix_str("; ".join(f"{name}: {now}" for name, now in self.doing.items()), refresh=False)
            self.bar.update(1)

    def write(self, line: str) -> None:
        """A log line above the bars (tqdm clears and redraws them)."""
        self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


class _InProcess:
    """Trains and scores in this process: the sequential path."""

    def train(self, config: Any, runs_dir: Path, device: str, resume: Path | None) -> Path:
        from deblurstack.engine.commands import train

        return train(config, runs_dir=runs_dir, device=device, resume=str(resume) if resume else None)

    def test(self, config: Any, weights: str, split: str, out: Path, device: str) -> None:
        from deblurstack.engine.commands import test

        test(config, checkpoint=weights, split=split, out=out, device=device)


class JobFailed(RuntimeError):
    """A trial's ``deblurstack train`` or ``test`` subprocess exited with an error (the message: its last line)."""


@dataclass
class _Subprocesses:
    """Trains and scores a trial as ``python -m deblurstack train|test`` subprocesses on one device each: the trial's
    config written to ``folder/<run>.yaml``, each process's output to ``folder/<run>.<train|split>.log``."""

    folder: Path

    def train(self, config: Any, runs_dir: Path, device: str, resume: Path | None) -> Path:
        options = ["--runs-dir", str(runs_dir), *(["--resume", str(resume)] if resume else [])]
        output = self._run(config, "train", ["train", str(self.config_file(config)), *options], device)
        return Path(re.findall(r"^run folder: (.+)$", output, re.MULTILINE)[-1])

    def test(self, config: Any, weights: str, split: str, out: Path, device: str) -> None:
        options = ["--checkpoint", weights, "--split", split, "--out", str(out)]
        self._run(config, split, ["test", str(self.config_file(config)), *options], device)

    def config_file(self, config: Any) -> Path:
        """Write the trial's config (the variant and seed applied, the run's name) as a plain train config."""
        path = self.folder / f"{config.data['name']}.yaml"
        write_bytes_atomic(path, yaml.safe_dump(config.data, sort_keys=False).encode())
        return path

    def _run(self, config: Any, what: str, arguments: list[str], device: str) -> str:
        """Run the command on ``device``: ``cuda:K`` is made the only visible GPU (``CUDA_VISIBLE_DEVICES``)."""
        environment = dict(os.environ)
        kind, _, index = device.partition(":")
        if kind == "cuda" and index:
            visible = environment.get("CUDA_VISIBLE_DEVICES")
            environment["CUDA_VISIBLE_DEVICES"] = visible.split(",")[int(index)] if visible else index
            device = "cuda"
        log = self.folder / f"{config.data['name']}.{what}.log"
        command = [sys.executable, "-m", "deblurstack", *arguments, "--device", device]
        with open(log, "w") as file:
            process = subprocess.run(
                command, stdin=subprocess.DEVNULL, stdout=file, stderr=subprocess.STDOUT, env=environment
            )
        output = log.read_text(errors="replace")
        if process.returncode:
            lines = [line.strip() for line in output.replace("\r", "\n").splitlines() if line.strip()]
            raise JobFailed(f"{lines[-1] if lines else 'no output'} (exit status {process.returncode}; {log})")
        return output


def _devices(devices: Sequence[str] | None, device: str) -> list[str]:
    """The devices trials run on: those given, else every CUDA device (``device`` auto or cuda), else ``device``."""
    if devices:
        return [d.strip() for d in devices]
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    return ["cpu" if device == "auto" else device]


def _train_trial(
    trial: Trial,
    config: Any,
    finished: Mapping[str, Any] | None,
    runs_dir: Path,
    scoring_only: Sequence[str],
    device: str,
    runner: _InProcess | _Subprocesses,
    progress: _Progress,
    log: Callable[[str], None],
) -> str:
    """Train the trial unless it finished before; sets its run, weights and status. Returns skipped, trained,
    resumed or failed."""
    from deblurstack.engine.checkpoints import Checkpoints

    if finished and finished.get("status") == "done" and Path(finished.get("weights", "")).is_file():
        trial.run, trial.weights, trial.status = finished["run"], finished["weights"], "done"
        return "skipped"
    name = config.data["name"]
    resume = _unfinished_run(runs_dir, name, trial.key, scoring_only)
    progress.phase(trial, "training")
    log(
        f"ablation: training {trial.variant}, seed {trial.seed} on {device}"
        + (f" (resuming {resume})" if resume else "")
    )
    try:
        run = runner.train(config, runs_dir, device, resume)
    except Exception as error:  # one trial's failure is reported in its rows; the others go on
        trial.status, trial.reason = "failed", _reason(error)
        log(f"ablation: {trial.variant}, seed {trial.seed} failed: {trial.reason}")
        return "failed"
    best = run / "checkpoints" / "best.pth"
    weights = best if best.exists() else Checkpoints(run / "checkpoints").latest()
    if weights is None:
        trial.status, trial.reason = "failed", f"training saved no checkpoint in {run / 'checkpoints'}"
        return "failed"
    trial.run, trial.weights, trial.status = str(Path(run).resolve()), str(Path(weights).resolve()), "done"
    return "trained" if resume is None else "resumed"


def _score_key(trial: Trial, resolved: Any, split: str) -> str:
    """A scoring's key: the trial, its weights file (retrained weights are scored again), the split and metrics."""
    weights = Path(trial.weights).stat()
    return hashlib.sha256(
        json.dumps(
            [trial.key, trial.weights, weights.st_size, weights.st_mtime_ns, split]
            + [resolved.data["data"][split], resolved.data.get("metrics")],
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:12]


def _score(
    trial: Trial,
    config: Any,
    split: str,
    out: Path,
    device: str,
    runner: _InProcess | _Subprocesses,
    progress: _Progress,
    log: Callable[[str], None],
) -> tuple[list[dict[str, str]] | None, str]:
    """The trial's per-image scores on a split (None when scoring failed) and whether they were scored, reused
    or failed."""
    if (out / "summary.md").is_file() and (out / "per_image.csv").is_file():
        outcome = "reused"
    else:
        if out.exists():  # a scoring killed before its summary: start it again
            import shutil

            shutil.rmtree(out)
        progress.phase(trial, f"scoring {split}")
        try:
            runner.test(config, trial.weights, split, out, device)
        except Exception as error:
            trial.failed_splits[split] = _reason(error)
            log(f"ablation: scoring {trial.variant}, seed {trial.seed} on {split} failed: {trial.failed_splits[split]}")
            return None, "failed"
        outcome = "scored"
    with open(out / "per_image.csv", newline="") as file:
        return list(csv.DictReader(file)), outcome


def _add_rows(study: Study, variant: str, seed: int, split: str, rows: list[dict[str, str]], with_input: bool) -> None:
    from deblurstack.engine.evaluation import Evaluation

    typed = [{k: (v if k == "image" else _float(v)) for k, v in row.items()} for row in rows]
    evaluation = Evaluation(typed)
    study.scores += [Score(variant, seed, split, m, v) for m, v in evaluation.means().items()]
    for row in typed:
        for column, value in row.items():
            if column == "image":
                continue
            if column.startswith("input_"):
                if with_input:
                    study.images.append(
                        ImageScore(INPUT, None, split, row["image"], column.removeprefix("input_"), value)
                    )
            else:
                study.images.append(ImageScore(variant, seed, split, row["image"], column, value))
    if with_input:
        study.scores += [Score(INPUT, None, split, m, v) for m, v in evaluation.means("input_").items()]


def _training_splits(resolved: Any) -> set[str]:
    """The splits training reads: ``train``, the validation split and whatever the trainer declares."""
    train = resolved.data.get("train") or {}
    splits = {"train", str(train.get("val_split") or "val")}
    if resolved.trainer is not None:
        declared = getattr(resolved.build_trainer(), "training_splits", None)
        if callable(declared):
            splits |= {use.split for use in declared()}
    return splits


def _unfinished_run(runs_dir: Path, name: str, key: str, scoring_only: Sequence[str]) -> Path | None:
    """The newest checkpoint of an earlier run of this trial (same key) that an ablation lost track of."""
    from deblurstack.engine.checkpoints import Checkpoints

    found = []
    for folder in runs_dir.glob(f"{name}*"):
        if not re.fullmatch(re.escape(name) + r"(_\d+)?", folder.name) or not (folder / "config.yaml").is_file():
            continue
        try:
            data = yaml.safe_load((folder / "config.yaml").read_text())
        except yaml.YAMLError:
            continue
        latest = Checkpoints(folder / "checkpoints").latest()
        if isinstance(data, dict) and latest is not None and config_key(data, scoring_only) == key:
            found.append(latest)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _metric_info(column: str, metrics: Sequence[Any], texts: Mapping[str, str]) -> MetricInfo:
    for metric in metrics:
        if column == metric.name or column.startswith(f"{metric.name}_"):
            return MetricInfo(metric.higher_is_better, texts[metric.name])
    return MetricInfo()


# ---------------------------------------------------------------------- loading studies


def load_study(path: str | Path) -> Study:
    """An ablation folder (``results.json``), or a folder holding exactly one; several are refused by name."""
    path = Path(path)
    if (path / "results.json").is_file():
        return Study.load(path)
    found = sorted(p.parent for p in path.glob("*/results.json")) if path.is_dir() else []
    if len(found) == 1:
        return Study.load(found[0])
    if found:
        described = []
        for folder in found:
            source = _read_json(folder / "results.json").get("source") or "?"
            described.append(f"{folder.name} (config {source})")
        raise ConfigError(
            f"{path}: holds the results of {len(found)} ablations of different configs: {'; '.join(described)}; "
            "name one of these folders"
        )
    raise ConfigError(f"{path}: no ablation results here (results.json, written by `deblurstack ablation`)")


# ---------------------------------------------------------------------- small pieces


def _columns(study: Study) -> list[tuple[str, str]]:
    return [(split, metric) for split in study.splits for metric in study.metrics]


def _arrow(study: Study, metric: str) -> str:
    return "↑" if study.metrics[metric].higher_is_better else "↓"


def _label(variant: str) -> str:
    return INPUT_LABEL if variant == INPUT else variant


def _protocols(study: Study) -> dict[str, MetricInfo]:
    return dict(study.metrics)


def _spread_note(study: Study) -> str:
    seeds = ", ".join(map(str, study.seeds))
    if len(study.seeds) > 1:
        return (
            f"Mean ± sample standard deviation (ddof 1) over {len(study.seeds)} seeds ({seeds}); "
            "best variant per column in bold."
        )
    return f"One seed ({seeds}): means only; best variant per column in bold."


def _tex(text: str) -> str:
    replacements = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_"}
    replacements |= {"{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}"}
    text = "".join(replacements.get(c, c) for c in text)
    return text.replace("±", "$\\pm$").replace("↑", "$\\uparrow$").replace("↓", "$\\downarrow$")


def _reason(error: BaseException) -> str:
    if isinstance(error, JobFailed):
        return str(error)
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


def _csv(columns: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _text(v) for k, v in row.items()} for row in rows)
    return text.getvalue().encode()


def _text(value: Any) -> str:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return "" if value is None else str(value)


def _read_json(path: Path) -> Any:
    """A JSON file the studies wrote; a damaged one is a one-line error naming it."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not readable JSON ({error}); the file is damaged") from None


def _float(value: Any) -> float:
    return math.nan if value in (None, "") else float(value)


def _seed_text(seed: int | None) -> str:
    return "" if seed is None else str(seed)


def _seed_value(seed: Any) -> int | None:
    return None if seed in (None, "") else int(seed)


def _json_value(value: Any) -> float | None:
    """A number for JSON: NaN and the empty value of a failed row as null (JSON has no NaN)."""
    return None if value == "" or value is None or math.isnan(value) else float(value)


def _json_number(value: Any) -> Any:
    return float(value) if isinstance(value, np.floating) else str(value)


__all__ = [
    "INPUT",
    "AblationResult",
    "Cell",
    "Comparison",
    "ImageScore",
    "JobFailed",
    "MetricInfo",
    "Score",
    "Study",
    "Trial",
    "ablation_settings",
    "best_rows",
    "bootstrap_interval",
    "compare",
    "config_key",
    "finish",
    "format_cell",
    "latex_table",
    "load_study",
    "markdown_table",
    "paired_differences",
    "plan_trials",
    "run_ablation",
    "summarize",
]
