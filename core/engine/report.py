"""A study's report: one self-contained HTML file (every image inlined as a base64 PNG, no external URL).

It shows the table (mean ± std over seeds, best in bold), the paired comparisons of every variant with the
first, bar charts with error bars per metric and test split, the training curves of every trial (``metrics.csv``
and the loss lines of ``train.log``), the per-image distribution of output minus input PSNR, and crops of the
regions where the variants' outputs differ most (input | each variant | target), recomputed with
:func:`deblurstack.engine.inference.predict` from each variant's first seed on the images where its scores
spread most. Plots are drawn with matplotlib (its object API, no pyplot state) and also written as
``report/*.png`` beside ``report.html``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from deblurstack.data import write_bytes_atomic
from deblurstack.engine.studies import (
    INPUT,
    Comparison,
    Study,
    best_rows,
    compare,
    format_cell,
    summarize,
)

#: crops: how many images per split, and the crop's side in pixels
CROP_IMAGES = 2
CROP_SIZE = 96
_LOG_LINE = re.compile(r"step (\d+): (.+?) \([\d.]+ it/s\)\s*$")


def write_report(study: Study, folder: Path, crop_images: int = CROP_IMAGES, device: str = "cpu") -> Path:
    """Write ``folder/report.html`` and its figures ``folder/report/*.png``; returns the HTML file."""
    figures = folder / "report"
    sections = [_table_section(study), _comparison_section(study)]
    bars = [
        (f"{metric}", _save(_bar_chart(study, metric), figures / f"bars_{_file(metric)}.png"))
        for metric in study.metrics
    ]
    sections.append(_figure_section("Scores per test split", bars, "Bars: mean over seeds; whiskers: ± std (ddof 1)."))
    curves = _curves(study)
    if curves is None:
        sections.append("<h2>Training curves</h2><p>No trial logged a loss or a validation score.</p>")
    else:
        sections.append(_figure_section("Training curves", [("curves", _save(curves, figures / "curves.png"))]))
    if "psnr" in study.metrics:
        gains = [
            (f"data.{split}", _save(_gain_plot(study, split), figures / f"gain_{_file(split)}.png"))
            for split in study.splits
        ]
        note = "Each point is one image under one seed; below 0 the output is worse than the blurry input."
        sections.append(_figure_section("Output minus input PSNR per image", gains, note))
    crops, problems = [], []
    for split in study.splits:
        try:
            figure = _crop_figure(study, split, crop_images, device)
        except Exception as error:  # the runs may be gone (a copied ablation folder): say so, keep the rest
            problems.append(f"data.{split}: {type(error).__name__}: {error}")
            continue
        if figure is not None:
            crops.append((f"data.{split}", _save(figure, figures / f"crops_{_file(split)}.png")))
    note = (
        f"The {crop_images} images per split whose scores spread most across the variants, cropped "
        f"({CROP_SIZE} px at most) where the variants' outputs differ most; each variant's first seed."
    )
    sections.append(_figure_section("Where the variants differ most", crops, note, problems))
    page = _page(study.title, sections)
    path = folder / "report.html"
    write_bytes_atomic(path, page.encode())
    return path


# ---------------------------------------------------------------------- HTML


def _page(title: str, sections: Sequence[str]) -> str:
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1200px;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:4px 8px;text-align:center}"
        "td:first-child{text-align:left}img{max-width:100%;display:block;margin:0.5em 0}"
        "figure{margin:1em 0}figcaption{font-size:90%;color:#555}.failed{color:#b00}"
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{style}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(sections) + "\n</body></html>\n"
    )


def _table_section(study: Study) -> str:
    cells, best = summarize(study), best_rows(study, summarize(study))
    metrics = list(study.metrics)
    arrow = {m: "↑" if info.higher_is_better else "↓" for m, info in study.metrics.items()}
    head = '<tr><th rowspan="2">variant</th>' + "".join(
        f'<th colspan="{len(metrics)}">{html.escape(split)}</th>' for split in study.splits
    )
    head += "</tr><tr>" + "".join(f"<th>{html.escape(m)} {arrow[m]}</th>" for _ in study.splits for m in metrics)
    rows = []
    for variant in study.rows():
        row = []
        for split in study.splits:
            for metric in metrics:
                text = html.escape(format_cell(cells[variant, split, metric]))
                row.append(
                    f"<td><b>{text}</b></td>" if variant in best.get((split, metric), ()) else f"<td>{text}</td>"
                )
        label = "blurry input" if variant == INPUT else variant
        rows.append(f"<tr><td>{html.escape(label)}</td>{''.join(row)}</tr>")
    seeds = ", ".join(map(str, study.seeds))
    spread = f"mean ± std (ddof 1) over seeds {seeds}" if len(study.seeds) > 1 else f"one seed ({seeds}), means only"
    parts = [
        "<h2>Results</h2>",
        f"<table><thead>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>",
        f"<p>{html.escape(spread)}; the best variant per column in bold.</p>",
        "<h3>Protocol</h3><ul>"
        + "".join(
            f"<li><code>{html.escape(m)}</code>: {html.escape(i.protocol)}</li>" for m, i in study.metrics.items()
        )
        + "</ul>",
    ]
    if failures := study.failures():
        parts.append(
            "<h3>Failed</h3><ul>" + "".join(f'<li class="failed">{html.escape(f)}</li>' for f in failures) + "</ul>"
        )
    return "\n".join(parts)


def comparisons(study: Study) -> list[Comparison]:
    """Every variant against the first (a single variant: against the blurry input), per split and metric."""
    baseline = study.variants[0] if len(study.variants) > 1 else INPUT
    others = [v for v in study.variants if v != baseline]
    done = []
    for split in study.splits:
        for metric in study.metrics:
            for variant in others:
                try:
                    done.append(compare(study, variant, baseline, split, metric))
                except Exception:  # nothing paired (failed trials): the table says why
                    continue
    return done


def _comparison_section(study: Study) -> str:
    found = comparisons(study)
    if not found:
        return "<h2>Paired comparisons</h2><p>No pair of variants has scores on the same images.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(c.a)} − {html.escape(c.b)}</td><td>{html.escape(c.split)}</td>"
        f"<td>{html.escape(c.metric)} {'↑' if c.higher_is_better else '↓'}</td><td>{c.mean:+.4f}</td>"
        f"<td>{c.low:+.4f} to {c.high:+.4f}</td><td>{c.better} / {c.worse} / {c.equal}</td><td>{c.images}</td></tr>"
        for c in found
    )
    return (
        "<h2>Paired comparisons</h2>"
        "<table><thead><tr><th>difference</th><th>split</th><th>metric</th><th>mean</th><th>95 % CI</th>"
        f"<th>better / worse / equal</th><th>images</th></tr></thead><tbody>{rows}</tbody></table>"
        "<p>Per image, the difference averaged over the seeds both have; the interval is a percentile bootstrap "
        "of the mean over images (10,000 resamples, numpy, seed 0).</p>"
    )


def _figure_section(
    title: str, figures: Sequence[tuple[str, bytes]], note: str = "", problems: Sequence[str] = ()
) -> str:
    parts = [f"<h2>{html.escape(title)}</h2>"] + ([f"<p>{html.escape(note)}</p>"] if note else [])
    for caption, png in figures:
        encoded = base64.b64encode(png).decode()
        parts.append(
            f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{encoded}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts += [f'<p class="failed">Not shown: {html.escape(problem)}</p>' for problem in problems]
    return "\n".join(parts)


# ---------------------------------------------------------------------- plots


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _save(figure: Any, path: Path) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return buffer.getvalue()


def _bar_chart(study: Study, metric: str) -> Any:
    cells = summarize(study)
    rows = study.rows()
    figure = _figure(max(4.0, 1.2 + 0.5 * len(rows) * len(study.splits)), 3.2)
    axes = figure.add_subplot()
    width = 0.8 / len(rows)
    colours = _colours(study)
    for index, variant in enumerate(rows):
        means = [cells[variant, split, metric].mean for split in study.splits]
        errors = [cells[variant, split, metric].std or 0.0 for split in study.splits]
        positions = np.arange(len(study.splits)) + (index - (len(rows) - 1) / 2) * width
        axes.bar(positions, means, width, yerr=errors, capsize=3, color=colours[variant], label=_label(variant))
    axes.set_xticks(np.arange(len(study.splits)), study.splits)
    axes.set_ylabel(f"{metric} {'↑' if study.metrics[metric].higher_is_better else '↓'}")
    finite = [cells[v, s, metric].mean for v in rows for s in study.splits if math.isfinite(cells[v, s, metric].mean)]
    if finite and min(finite) > 0:  # PSNR-like scores: start near the lowest bar so that differences show
        low, high = min(finite), max(finite)
        axes.set_ylim(max(0.0, low - 0.5 * (high - low) - 0.05 * high), None)
    figure.legend(loc="outside lower center", fontsize="small", ncols=min(4, len(rows)))
    axes.set_title(metric)
    return figure


def read_curves(run: Path) -> dict[str, list[tuple[int, float]]]:
    """A run's curves: ``<split>/<metric>`` from metrics.csv, and each logged loss term from train.log."""
    curves: dict[str, list[tuple[int, float]]] = {}
    if (run / "metrics.csv").is_file():
        with open(run / "metrics.csv", newline="") as file:
            for row in csv.DictReader(file):
                curves.setdefault(f"{row['split']}/{row['metric']}", []).append((int(row["step"]), float(row["value"])))
    if (run / "train.log").is_file():
        for line in (run / "train.log").read_text().splitlines():
            match = _LOG_LINE.search(line)
            if not match:
                continue
            for term in match.group(2).split(", "):
                name, _, value = term.rpartition(" ")
                if name and "lr" not in name:
                    try:
                        curves.setdefault(f"train/{name}", []).append((int(match.group(1)), float(value)))
                    except ValueError:
                        continue
    return curves


def _curves(study: Study) -> Any | None:
    runs = [(t, read_curves(Path(t.run))) for t in study.trials if t.status == "done" and t.run]
    names = list(dict.fromkeys(name for _, curves in runs for name in curves))
    if not names:
        return None
    columns = min(3, len(names))
    lines = math.ceil(len(names) / columns)
    figure = _figure(4.0 * columns, 2.8 * lines)
    colours = _colours(study)
    styles = ["-", "--", ":", "-."]
    for index, name in enumerate(names):
        axes = figure.add_subplot(lines, columns, index + 1)
        for trial, curves in runs:
            if name in curves:
                steps, values = zip(*sorted(curves[name]), strict=True)
                style = styles[study.seeds.index(trial.seed) % len(styles)] if trial.seed in study.seeds else "-"
                label = f"{trial.variant} s{trial.seed}"
                axes.plot(
                    steps,
                    values,
                    style,
                    marker="." if len(steps) < 3 else None,
                    color=colours[trial.variant],
                    label=label,
                )
        axes.set_title(name)
        axes.set_xlabel("step")
        if index == 0:
            axes.legend(fontsize="x-small")
    return figure


def _gain_plot(study: Study, split: str) -> Any:
    inputs = study.per_image(INPUT, split, "psnr")
    figure = _figure(max(4.0, 1.0 + 0.9 * len(study.variants)), 3.2)
    axes = figure.add_subplot()
    colours = _colours(study)
    data = []
    for variant in study.variants:
        outputs = study.per_image(variant, split, "psnr")
        gains = [v - inputs[(None, image)] for (_, image), v in outputs.items() if (None, image) in inputs]
        data.append([g for g in gains if math.isfinite(g)] or [math.nan])
    positions = np.arange(1, len(study.variants) + 1)
    axes.boxplot(data, positions=positions, widths=0.5, showfliers=False)
    rng = np.random.default_rng(0)
    for position, variant, gains in zip(positions, study.variants, data, strict=True):
        axes.scatter(position + rng.uniform(-0.15, 0.15, len(gains)), gains, s=10, color=colours[variant], alpha=0.7)
    axes.axhline(0.0, color="0.4", linewidth=0.8)
    axes.set_xticks(positions, study.variants)
    axes.set_ylabel("output − input PSNR (dB)")
    axes.set_title(f"data.{split}")
    return figure


def _crop_figure(study: Study, split: str, count: int, device: str) -> Any | None:
    """Input | each variant | target on the images (and regions) where the variants differ most."""
    metric = "psnr" if "psnr" in study.metrics else next(iter(study.metrics), None)
    trials = {}
    for trial in sorted(study.trials, key=lambda t: t.seed):
        if trial.status == "done" and trial.variant not in trials and split not in trial.failed_splits:
            trials[trial.variant] = trial
    if metric is None or not trials:
        return None
    spread: dict[str, list[float]] = {}
    for variant in trials:
        per_seed: dict[str, list[float]] = {}
        for (_, image), value in study.per_image(variant, split, metric).items():
            per_seed.setdefault(image, []).append(value)
        for image, values in per_seed.items():
            spread.setdefault(image, []).append(float(np.nanmean(values)))
    ranked = sorted(spread, key=lambda i: -(np.nanmax(spread[i]) - np.nanmin(spread[i])) if len(spread[i]) > 1 else 0)
    images = ranked[:count]
    outputs = {variant: _outputs(study, trial, split, images, device) for variant, trial in trials.items()}
    first = next(iter(outputs.values()))
    figure = _figure(1.6 * (len(trials) + 2), 1.8 * len(images))
    for row, image in enumerate(images):
        source, target = first[image]["input"], first[image]["target"]
        variant_outputs = [outputs[v][image]["output"] for v in trials]
        top, left, size = _region(np.stack(variant_outputs))
        panels = [("input", source)] + list(zip(trials, variant_outputs, strict=True)) + [("target", target)]
        for column, (label, picture) in enumerate(panels):
            axes = figure.add_subplot(len(images), len(panels), row * len(panels) + column + 1)
            axes.imshow(np.clip(picture[top : top + size, left : left + size], 0, 1), interpolation="nearest")
            axes.set_xticks([])
            axes.set_yticks([])
            if row == 0:
                axes.set_title(label, fontsize="small")
            if column == 0:
                axes.set_ylabel(image, fontsize="x-small")
    return figure


def _outputs(study: Study, trial: Any, split: str, images: Sequence[str], device: str) -> dict[str, dict[str, Any]]:
    """For each image: the trial's output, the input and the target, as H x W x 3 arrays."""
    import torch
    import yaml

    from deblurstack.checkpoint import load_stack_weights
    from deblurstack.compose import resolve_config
    from deblurstack.engine.distributed import resolve_device
    from deblurstack.engine.inference import predict

    data = yaml.safe_load((Path(trial.run) / "config.yaml").read_text())
    data.setdefault("data", {})[split] = data["data"].get(split) or study.split_data[split]
    resolved = resolve_config(data, splits=[split])
    place = resolve_device(device)
    stack = resolved.build_stack()
    load_stack_weights(stack, Path(trial.weights))
    stack.to(place).eval()
    dataset = resolved.build_dataset(split)
    names = [pair.name for pair in getattr(dataset, "pairs", [])]
    found = {}
    with torch.inference_mode():
        for image in images:
            index = (
                names.index(image)
                if image in names
                else next(i for i in range(len(dataset)) if dataset[i]["name"] == image)
            )
            sample = dataset[index]
            batch = {k: v.unsqueeze(0).to(place) if isinstance(v, torch.Tensor) else v for k, v in sample.items()}
            aux = {k: v for k, v in batch.items() if k not in ("name", "input", "target")}
            output = predict(stack, batch["input"], aux).clamp(0, 1)[0]
            found[image] = {
                name: tensor.permute(1, 2, 0).float().cpu().numpy()
                for name, tensor in (("output", output), ("input", sample["input"]), ("target", sample["target"]))
            }
    return found


def _region(outputs: np.ndarray, size: int = CROP_SIZE) -> tuple[int, int, int]:
    """(top, left, side) of the square where the outputs (V x H x W x 3) differ most from each other."""
    height, width = outputs.shape[1:3]
    side = min(size, height, width)
    difference = outputs.std(axis=0).mean(axis=-1) if len(outputs) > 1 else np.zeros((height, width))
    sums = np.pad(difference.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    windows = sums[side:, side:] - sums[:-side, side:] - sums[side:, :-side] + sums[:-side, :-side]
    top, left = np.unravel_index(int(np.argmax(windows)), windows.shape)
    return int(top), int(left), side


def _colours(study: Study) -> dict[str, Any]:
    from matplotlib import colormaps

    palette = colormaps["tab10"]
    return {INPUT: "0.6"} | {variant: palette(index % 10) for index, variant in enumerate(study.variants)}


def _label(variant: str) -> str:
    return "blurry input" if variant == INPUT else variant


def _file(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


__all__ = ["comparisons", "read_curves", "write_report"]
