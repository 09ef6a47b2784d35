"""Scoring a stack on a dataset: per-image metric values for the output and for the blurry
input, a CSV of them and a Markdown summary that states how every number was computed."""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from deblurstack.data import ImageError, write_bytes_atomic, write_image
from deblurstack.engine.distributed import Distributed, gather
from deblurstack.engine.inference import TILE_OVERLAP, predict, with_translated
from deblurstack.run import Sample


@dataclass
class NamedMetric:
    """A built metric with its name and what it needs from a sample."""

    name: str
    module: nn.Module
    requires: tuple[str, ...] = ()
    higher_is_better: bool = True

    def __call__(self, output: Tensor, target: Tensor, sample: Mapping[str, Any]) -> dict[str, float]:
        values = self.module(output, target, **{key: sample[key] for key in self.requires})
        if isinstance(values, Mapping):
            return {f"{self.name}_{key}": float(value[0]) for key, value in values.items()}
        return {self.name: float(values[0])}


@dataclass
class Evaluation:
    """Per-image rows ``{"image", <metric>..., "input_<metric>"...}`` and a few samples for grids."""

    rows: list[dict[str, Any]]
    samples: list[Sample] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # the problems of pairs not scored (``skip_bad``)

    def means(self, prefix: str = "") -> dict[str, float]:
        """Mean of each metric over the images (``prefix="input_"`` for the blurry input's scores).

        A NaN score means the metric does not apply to that image (a region metric on an image without that
        region) and is left out of the mean; a column of NaN only has a NaN mean.
        """
        keys = [k for k in self.rows[0] if k != "image" and k.startswith(prefix)] if self.rows else []
        if not prefix:
            keys = [k for k in keys if not k.startswith("input_")]
        return {k.removeprefix(prefix): _mean([row[k] for row in self.rows]) for k in keys}


def _mean(values: list[float]) -> float:
    scored = [v for v in values if not math.isnan(v)]
    return sum(scored) / len(scored) if scored else math.nan


@torch.inference_mode()
def evaluate(
    stack: nn.Module,
    dataset: Any,
    metrics: Sequence[NamedMetric],
    distributed: Distributed | None = None,
    *,
    score_input: bool = True,
    keep_samples: int = 0,
    save_to: Path | None = None,
    translated_to: Path | None = None,
    tile: int | None = None,
    overlap: int = TILE_OVERLAP,
) -> Evaluation:
    """Run ``stack`` on every image of ``dataset`` (sharded across ranks) and score it.

    The whole image goes through the stack (or overlapping tiles of ``tile`` pixels); outputs
    are clamped to [0, 1]; ``save_to`` and ``translated_to`` also write the outputs and the translator's images
    there. Every rank returns the rows of all ranks, sorted by image name. A pair that fails to load stops the
    evaluation, unless the dataset's ``skip_bad`` is set: then it is listed in ``skipped`` and scored by no metric
    (the means are over the images scored).
    """
    distributed = distributed or Distributed()
    # one pass gives the translated image too, where it is saved or kept for the grids
    has_translator = getattr(stack, "translator", None) is not None
    both = with_translated(stack) if translated_to is not None or (keep_samples > 0 and has_translator) else None
    was_training = stack.training
    stack.eval()
    rows, samples, skipped = [], [], []
    try:
        for index in range(distributed.rank, len(dataset), distributed.world_size):
            try:
                sample = dataset[index]
            except ImageError as error:
                if not getattr(dataset, "skip_bad", False):
                    raise
                skipped.append(str(error))
                continue
            batch = {
                k: v.unsqueeze(0).to(distributed.device) if isinstance(v, Tensor) else v for k, v in sample.items()
            }
            aux = {k: v for k, v in batch.items() if k not in ("name", "input", "target")}
            translated = None
            if both is not None and (translated_to is not None or len(samples) < keep_samples):
                output, translated = predict(both, batch["input"], aux, tile=tile, overlap=overlap)
                translated = translated.clamp(0, 1)
            else:
                output = predict(stack, batch["input"], aux, tile=tile, overlap=overlap)
            output = output.clamp(0, 1)
            row: dict[str, Any] = {"image": sample["name"]}
            for metric in metrics:
                row.update(metric(output, batch["target"], batch))
            if score_input:
                for metric in metrics:
                    scores = metric(batch["input"], batch["target"], batch)
                    row.update({f"input_{k}": v for k, v in scores.items()})
            rows.append(row)
            if save_to is not None:
                write_image(save_to / f"{sample['name']}.png", output[0].permute(1, 2, 0).cpu().numpy())
            if translated_to is not None:
                write_image(translated_to / f"{sample['name']}.png", translated[0].permute(1, 2, 0).cpu().numpy())
            if len(samples) < keep_samples:
                kept = translated[0].cpu() if translated is not None else None
                samples.append(Sample(sample["name"], sample["input"], output[0].cpu(), sample["target"], kept))
    finally:
        stack.train(was_training)
    every = [row for part in gather(rows, distributed) for row in part]
    problems = sorted(problem for part in gather(skipped, distributed) for problem in part)
    return Evaluation(sorted(every, key=lambda row: row["image"]), samples, problems)


def write_report(
    evaluation: Evaluation, metrics: Sequence[NamedMetric], folder: Path, title: str, notes: Sequence[str] = ()
) -> tuple[Path, Path]:
    """``per_image.csv`` and ``summary.md`` (a table of means and the protocol of every metric)."""
    folder.mkdir(parents=True, exist_ok=True)
    csv_path, summary_path = folder / "per_image.csv", folder / "summary.md"
    columns = list(evaluation.rows[0]) if evaluation.rows else ["image"]
    lines = []
    with open(csv_path.with_suffix(".tmp"), "w", newline="") as file:
        writer = csv.DictWriter(file, columns)
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in row.items()} for row in evaluation.rows)
    csv_path.with_suffix(".tmp").replace(csv_path)

    output, blurry = evaluation.means(), evaluation.means("input_")
    names = list(output)
    header = [f"{name} {_arrow(name, metrics)}".strip() for name in names]
    lines += [
        f"# {title}",
        "",
        f"{len(evaluation.rows)} images"
        + (f"; {len(evaluation.skipped)} skipped (below)." if evaluation.skipped else "."),
        "",
        "| | " + " | ".join(header) + " |",
        "|---|" + "---|" * len(names),
    ]
    if blurry:
        lines.append("| blurry input | " + " | ".join(_cell(blurry.get(n, math.nan)) for n in names) + " |")
    lines.append("| output | " + " | ".join(_cell(output[n]) for n in names) + " |")
    lines += ["", "## Protocol", ""] + [f"- `{name}`: {text}" for name, text in protocols(metrics).items()]
    lines += [f"- {note}" for note in notes]
    if evaluation.skipped:
        lines += ["", "## Skipped", ""] + [f"- {problem}" for problem in evaluation.skipped]
    write_bytes_atomic(summary_path, ("\n".join(lines) + "\n").encode())
    return csv_path, summary_path


def protocols(metrics: Sequence[NamedMetric]) -> dict[str, str]:
    """How each metric is computed (its module's ``protocol``), by metric name: what reports print under tables."""
    return {m.name: getattr(m.module, "protocol", "") or "not stated" for m in metrics}


def _arrow(column: str, metrics: Sequence[NamedMetric]) -> str:
    for metric in metrics:
        if column == metric.name or column.startswith(f"{metric.name}_"):
            return "↑" if metric.higher_is_better else "↓"
    return ""


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


__all__ = ["Evaluation", "NamedMetric", "evaluate", "protocols", "write_report"]
