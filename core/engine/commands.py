"""The engine's command-line commands: train, test, ablation, run, export, synth, masks, crop, quickstart.

Each takes the parsed arguments of ``deblurstack.cli``; problems the user can fix raise
:class:`~deblurstack.DeblurstackError` subclasses, which the CLI prints as one line.
"""

from __future__ import annotations

import argparse
import importlib.resources
from pathlib import Path
from typing import Any

import yaml

from deblurstack.checkpoint import load_stack_weights
from deblurstack.engine.checkpoints import Checkpoints
from deblurstack.errors import ConfigError

#: the example configs, shipped with the package (``examples/`` of the source tree)
EXAMPLES = Path(str(importlib.resources.files("deblurstack.examples")))


def train(args: argparse.Namespace) -> None:
    train_run(args)


def train_run(args: argparse.Namespace) -> Path:
    """Train; returns the run folder."""
    from deblurstack.engine import distributed
    from deblurstack.engine.training import prepare_training

    job, trainer = prepare_training(
        args.file,
        args.overrides,
        args.runs_dir,
        args.resume,
        args.device,
        command=getattr(args, "command_line", ""),
        variant=getattr(args, "variant", None),
    )
    try:
        trainer.fit(job)
    finally:
        distributed.teardown()
    if job.distributed.is_main:
        print(f"run folder: {job.run.directory}")
    return job.run.directory


def test(args: argparse.Namespace) -> None:
    score(args, echo=True)


def score(args: argparse.Namespace, echo: bool = False) -> Any:
    """Evaluate a checkpoint on a data split and write the report; returns the Evaluation (main process)."""
    from deblurstack.compose import resolve_config
    from deblurstack.engine import distributed
    from deblurstack.engine.evaluation import evaluate, write_report

    overrides = _tlc_override(args) + ([f"data.{args.split}.skip_bad=true"] if args.skip_bad else [])
    resolved = resolve_config(args.file, overrides, variant=getattr(args, "variant", None))
    if args.split not in resolved.datasets:
        raise ConfigError(f"{args.file}: data.{args.split}: no such split (splits: {', '.join(resolved.datasets)})")
    metrics = resolved.build_metrics()
    if not metrics:
        raise ConfigError(f"{args.file}: metrics: none configured; add e.g. metrics: [{{type: psnr}}, {{type: ssim}}]")
    place = distributed.setup(args.device)
    try:
        stack = resolved.build_stack()
        weights = _load_weights(stack, resolved, args)
        stack.to(place.device)
        for metric in metrics:
            metric.module.to(place.device)
        dataset = resolved.build_dataset(args.split)
        out = Path(args.out) if args.out else _default_report_folder(args.checkpoint, resolved, args.split)
        if (out / "summary.md").exists():
            raise ConfigError(f"--out {out}: already holds a report; choose another folder (reports are never replaced)")
        images = out / "images" if args.save_images else None
        result = evaluate(stack, dataset, metrics, place, save_to=images, tile=args.tile, overlap=args.overlap)
    finally:
        distributed.teardown()
    if not place.is_main:
        return None
    tiling = "whole images" if not args.tile else f"overlapping tiles of {args.tile} px, overlap {args.overlap} px"
    notes = [f"weights: {weights}", f"data: data.{args.split} = {resolved.datasets[args.split].type}", tiling]
    if tlc := resolved.backbone.options.get("tlc"):
        height, width = tlc["train_size"]
        notes.append(f"TLC: global average pools replaced by local ones for training size {height}x{width}")
    _, summary = write_report(result, metrics, out, f"{resolved.data.get('name', 'evaluation')}: {args.split}", notes)
    if echo:
        print(summary.read_text())
    return result


def _tlc_override(args: argparse.Namespace) -> list[str]:
    """The command's overrides, plus ``--tlc TRAIN_SIZE`` as the backbone's ``tlc`` option."""
    tlc = getattr(args, "tlc", None)
    return [*args.overrides, *([f"stack.backbone.tlc={{train_size: {tlc}}}"] if tlc is not None else [])]


def ablation(args: argparse.Namespace) -> None:
    """Train and score every variant of a config; one table of the means."""
    from deblurstack.config import load_config
    from deblurstack.data import write_bytes_atomic

    base = load_config(args.file, args.overrides)
    names = args.variants.split(",") if args.variants else base.variants
    if not names:
        raise ConfigError(f"{args.file}: variants: none defined (an ablation runs each variant of the file)")
    rows = []
    for name in names:
        run = argparse.Namespace(**vars(args), variant=name, resume=None)
        folder = train_run(run)
        checkpoint = folder / "checkpoints" / "best.pth"
        if not checkpoint.exists():
            checkpoint = Checkpoints(folder / "checkpoints").latest()
        result = score(
            argparse.Namespace(
                **vars(run),
                checkpoint=str(checkpoint),
                weights="auto",
                out=None,
                save_images=False,
                skip_bad=False,
                tile=None,
                overlap=32,
            )
        )
        rows.append((name, result.means(), result.means("input_")))
    metrics = list(rows[0][1])
    lines = [
        f"# {base.data.get('name', Path(args.file).stem)}: ablation on data.{args.split}",
        "",
        "| variant | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
        "| blurry input | " + " | ".join(f"{rows[0][2].get(m, float('nan')):.4f}" for m in metrics) + " |",
    ]
    lines += [f"| {name} | " + " | ".join(f"{means[m]:.4f}" for m in metrics) + " |" for name, means, _ in rows]
    report = Path(args.runs_dir) / f"{base.data.get('name', Path(args.file).stem)}-ablation.md"
    write_bytes_atomic(report, ("\n".join(lines) + "\n").encode())
    print("\n".join(lines))
    print(f"\nablation table: {report}")


def run(args: argparse.Namespace) -> None:
    import torch

    from deblurstack.compose import resolve_config
    from deblurstack.engine.inference import expand_inputs, run_on_files

    resolved = resolve_config(args.file, _tlc_override(args))
    needed = {name: node for node in resolved.priors for name in node.record.requires}
    sources = {}
    if needed:  # the priors' inputs come from the mask sources of one data split (SAM masks, say)
        split = args.aux_from
        if split not in resolved.datasets:
            raise ConfigError(
                f"{args.file}: data.{split}: no such split to take the priors' inputs from "
                f"(--aux-from; splits: {', '.join(resolved.datasets) or 'none'})"
            )
        given = resolved.datasets[split].aux
        for name, node in needed.items():
            if name not in given:
                raise ConfigError(
                    f"{args.file}: {node.keypath}: prior {node.type!r} needs input {name!r}: give "
                    f"data.{split}.aux.{name} a mask source (--aux-from picks another split)"
                )
        sources = {name: source for name, source in resolved.build_aux_sources(split).items() if name in needed}
    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else args.device
        if args.device != "auto"
        else "cpu"
    )
    stack = resolved.build_stack()
    _load_weights(stack, resolved, args)
    written, skipped = run_on_files(
        stack.to(device),
        expand_inputs(args.inputs),
        Path(args.out),
        device,
        args.tile,
        args.overlap,
        sources,
        skip_bad=args.skip_bad,
    )
    for problem in skipped:
        print(f"skipped: {problem}")
    print(f"{len(written)} image(s) written to {args.out}" + (f", {len(skipped)} skipped" if skipped else ""))


def export(args: argparse.Namespace) -> None:
    from deblurstack.compose import resolve_config
    from deblurstack.engine.export import CHECK_SIZE, export_onnx

    resolved = resolve_config(args.file, args.overrides)
    for node in resolved.priors:
        if node.record.requires:
            raise ConfigError(
                f"{args.file}: {node.keypath}: prior {node.type!r} needs input "
                f"{', '.join(node.record.requires)}; exported stacks take the image only"
            )
    stack = resolved.build_stack()
    weights = load_stack_weights(stack, Path(args.checkpoint), args.weights) if args.checkpoint else "random weights"
    route, difference = export_onnx(stack, args.out)
    print(
        f"{args.out}: ONNX by {route}, {weights}; on a {CHECK_SIZE[0]}x{CHECK_SIZE[1]} input it differs from "
        f"PyTorch by at most {difference:.2e}"
    )


def synth(args: argparse.Namespace) -> None:
    from deblurstack.compose import resolve_node
    from deblurstack.engine.prepare import synthesize

    node = {"type": args.type, **_parse_settings(args.params)}
    resolved = resolve_node("synthesizer", node, "--type / --set")
    frames = resolved.record.frames
    frames = resolved.params[frames] if isinstance(frames, str) else frames
    names = synthesize(
        args.source,
        args.out,
        resolved.build(),
        frames,
        args.seed,
        args.per_image,
        args.max_side,
        resolved.record.provides,
    )
    print(f"{len(names)} pairs written to {Path(args.out) / 'input'} and {Path(args.out) / 'target'}")


def masks(args: argparse.Namespace) -> None:
    """Compute the auxiliary maps of every image in advance, into the caches the config names."""
    from tqdm import tqdm

    from deblurstack.compose import resolve_config
    from deblurstack.masks import CachedSource

    resolved = resolve_config(args.file, args.overrides, variant=args.variant)
    splits = [args.split] if args.split else [s for s, node in resolved.datasets.items() if node.aux]
    for split in splits:
        node = resolved.datasets.get(split)
        if node is None or not node.aux:
            raise ConfigError(f"{args.file}: data.{split}: no auxiliary inputs with a mask source to compute")
        uncached = [f"data.{split}.aux.{name}" for name, source in node.aux.items() if not source.options.get("cache")]
        if uncached:
            raise ConfigError(f"{args.file}: {uncached[0]}: set `cache: <folder>` so that computed maps are kept")
        dataset = resolved.build_dataset(split)
        for pair in tqdm(dataset.pairs, desc=f"maps for data.{split}", unit="image"):
            dataset.load(pair)
        caches = [s for s in dataset.aux_sources.values() if isinstance(s, CachedSource)]
        made = sum(cache.generated for cache in caches)
        print(
            f"data.{split}: {len(dataset.pairs)} images, {made} maps computed, "
            f"{len(dataset.pairs) * len(caches) - made} already cached"
        )


def crop(args: argparse.Namespace) -> None:
    from deblurstack.engine.prepare import crop_folder

    for source in args.sources:
        count = crop_folder(source, Path(args.out) / Path(source).name, args.size, args.stride)
        print(f"{source}: {count} crops of {args.size} px (stride {args.stride})")


def quickstart(args: argparse.Namespace) -> None:
    """Synthesize a small dataset from the bundled photos, train a small stack, evaluate it."""
    from deblurstack.compose import resolve_node
    from deblurstack.config import load_config
    from deblurstack.engine.prepare import EMBEDDED, EMBEDDED_PHOTOS, synthesize

    config = EXAMPLES / "quickstart.yaml"
    data = Path(args.data)
    overrides = [f"vars.data={data}", *args.overrides]
    recipe = load_config(config, overrides).data["vars"]  # not resolved: the data folders do not exist yet
    blur = resolve_node("synthesizer", recipe["blur"], "vars.blur", source=str(config)).build()
    held_out = list(recipe["test_photos"])
    splits = {"train": [n for n in EMBEDDED_PHOTOS if n not in held_out], "test": held_out}
    for split, names in splits.items():
        if not (data / split / "target").is_dir():
            synthesize(
                EMBEDDED,
                data / split,
                blur,
                seed=recipe["seeds"][split],
                per_image=recipe["pairs_per_photo"],
                max_side=recipe["max_side"],
                names=names,
            )
    print(f"quickstart data: {data} (train: {', '.join(splits['train'])}; test: {', '.join(held_out)})")
    if args.data_only:
        return
    run_folder = train_run(
        argparse.Namespace(file=str(config), overrides=overrides, runs_dir=args.runs_dir, resume=None, device="cpu")
    )
    checkpoint = run_folder / "checkpoints" / "best.pth"
    test(
        argparse.Namespace(
            file=str(config),
            overrides=overrides,
            checkpoint=str(checkpoint),
            weights="auto",
            split="test",
            out=str(run_folder / "evaluation"),
            save_images=True,
            skip_bad=False,
            tile=None,
            overlap=32,
            device="cpu",
        )
    )
    grids = sorted((run_folder / "images").glob("step_*.png"))
    print(f"image grid (input | output | target): {grids[-1] if grids else 'none'}")


# ---------------------------------------------------------------------- helpers


def _parse_settings(settings: list[str]) -> dict[str, Any]:
    parsed = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {setting!r}: expected key=value")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return parsed


def _default_report_folder(checkpoint: str | None, resolved: Any, split: str) -> Path:
    """``<run>/evaluation/<split>``, or ``<split>_1``, ``<split>_2`` ... when an earlier report is there."""
    if checkpoint is None:  # weights named in the config
        folder = Path("runs") / str(resolved.data.get("name", "evaluation")) / "evaluation"
    else:
        path = Path(checkpoint)
        folder = (path.parent.parent if path.parent.name == "checkpoints" else path.parent) / "evaluation"
    candidate, suffix = folder / split, 0
    while candidate.exists() and any(candidate.iterdir()):
        suffix += 1
        candidate = folder / f"{split}_{suffix}"
    return candidate


def _load_weights(stack: Any, resolved: Any, args: argparse.Namespace) -> str:
    """The --checkpoint file, or else the weights the config names; a stack without weights is an error."""
    if args.checkpoint:
        return f"{args.checkpoint} ({load_stack_weights(stack, Path(args.checkpoint), args.weights)})"
    named = [n.keypath for _, n in resolved.model_nodes() if n.options.get("checkpoint")]
    if resolved.checkpoint:
        return f"stack.checkpoint {resolved.checkpoint['path']}"
    if named:
        return "checkpoints of " + ", ".join(named)
    raise ConfigError(f"{args.file}: no weights: pass --checkpoint, or set stack.checkpoint in the config")
