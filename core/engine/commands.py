"""The engine's commands: train, test, ablation, compare, report, run, export, synth, masks, crop, quickstart.

Each command is a typed function, usable from Python (``train(config, overrides, runs_dir=...)``), and a thin
command-line adapter beside it: ``<name>_command(parser)`` declares the command's arguments and returns the
handler that calls the function with them. Problems the user can fix raise
:class:`~deblurstack.DeblurstackError` subclasses, which the CLI prints as one line.

Config overrides (``KEY=VALUE``) follow the config file on every command's command line, before or after the
options. This module imports no torch at load time, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import importlib.resources
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from deblurstack.engine import TILE_OVERLAP
from deblurstack.errors import ConfigError

if TYPE_CHECKING:
    from deblurstack.compose import ResolvedConfig
    from deblurstack.config import Config
    from deblurstack.engine.evaluation import Evaluation
    from deblurstack.engine.studies import AblationResult, Comparison

#: the example configs, shipped with the package (``examples/`` of the source tree)
EXAMPLES = Path(str(importlib.resources.files("deblurstack.examples")))
Weights = Literal["auto", "ema", "model"]
Handler = Callable[[argparse.Namespace], Any]


# ---------------------------------------------------------------------- train


def train(
    config: str | Path | Config,
    overrides: Sequence[str] = (),
    *,
    runs_dir: str | Path = "runs",
    resume: str | None = None,
    device: str = "auto",
    variant: str | None = None,
    command_line: str = "",
) -> Path:
    """Train the stack a config (a file, or a loaded :class:`~deblurstack.config.Config`) describes; returns the
    run folder. ``resume``: ``"latest"`` or a checkpoint."""
    from deblurstack.engine import distributed
    from deblurstack.engine.training import prepare_training

    _folder_to_write(runs_dir, "--runs-dir")
    job, trainer = prepare_training(config, overrides, runs_dir, resume, device, command_line, variant)
    try:
        trainer.fit(job)
        distributed.wait_for_all(job.distributed)
    finally:
        distributed.teardown()
    return job.run.directory


def train_command(parser: argparse.ArgumentParser) -> Handler:
    _config_arguments(parser)
    parser.add_argument("--runs-dir", default="runs", help="folder of run folders (default: runs)")
    parser.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        metavar="CHECKPOINT",
        help="continue the run named in the config from its newest checkpoint, or from CHECKPOINT",
    )

    def handle(args: argparse.Namespace) -> None:
        folder = train(
            args.file,
            args.overrides,
            runs_dir=args.runs_dir,
            resume=args.resume,
            device=args.device,
            variant=args.variant,
            command_line=args.command_line,
        )
        if _is_main_process():
            print(f"run folder: {folder}")

    return handle


# ---------------------------------------------------------------------- test


def test(
    config: str | Path | Config,
    overrides: Sequence[str] = (),
    *,
    checkpoint: str | Path | None = None,
    weights: Weights = "auto",
    split: str = "test",
    out: str | Path | None = None,
    save_images: bool = False,
    save_translated: bool = False,
    skip_bad: bool = False,
    tile: int | None = None,
    overlap: int = TILE_OVERLAP,
    tlc: int | None = None,
    device: str = "auto",
    variant: str | None = None,
) -> tuple[Evaluation, Path] | None:
    """Score a checkpoint (or the weights the config names) on a data split and write the report (never over
    another report); returns the evaluation and the report folder on the main process, None on other ranks."""
    from deblurstack.compose import resolve_config
    from deblurstack.engine import distributed
    from deblurstack.engine.evaluation import evaluate, write_report

    _check_tiles(tile, overlap)
    overrides = [*_with_tlc(overrides, tlc), *([f"data.{split}.skip_bad=true"] if skip_bad else [])]
    resolved = resolve_config(config, overrides, variant=variant, splits=[split])
    if split not in resolved.datasets:
        raise ConfigError(f"{config}: data.{split}: no such split (splits: {', '.join(resolved.datasets)})")
    metrics = resolved.build_metrics()
    if not metrics:
        raise ConfigError(f"{config}: metrics: none configured; add e.g. metrics: [{{type: psnr}}, {{type: ssim}}]")
    folder = _folder_to_write(out, "--out") if out else _report_folder(checkpoint, resolved, split)
    if (folder / "summary.md").exists():
        raise ConfigError(f"--out {folder}: already holds a report; choose another folder (reports are never replaced)")
    place = distributed.setup(device)
    try:
        stack = resolved.build_stack()
        loaded = _load_weights(stack, resolved, config, checkpoint, weights)
        stack.to(place.device)
        for metric in metrics:
            metric.module.to(place.device)
        dataset = resolved.build_dataset(split)
        if save_translated and stack.translator is None:
            raise ConfigError(f"{config}: --save-translated: the stack has no translator (stack.translator)")
        images = folder / "images" if save_images else None
        translated = folder / "translated" if save_translated else None
        result = evaluate(
            stack, dataset, metrics, place, save_to=images, translated_to=translated, tile=tile, overlap=overlap
        )
        distributed.wait_for_all(place)
    finally:
        distributed.teardown()
    if not place.is_main:
        return None
    tiling = "whole images" if not tile else f"overlapping tiles of {tile} px, overlap {overlap} px"
    notes = [f"weights: {loaded}", f"data: data.{split} = {resolved.datasets[split].type}", tiling]
    if backbone_tlc := resolved.backbone.options.get("tlc"):
        height, width = backbone_tlc["train_size"]
        notes.append(f"TLC: global average pools replaced by local ones for training size {height}x{width}")
    write_report(result, metrics, folder, f"{resolved.data.get('name', 'evaluation')}: {split}", notes)
    return result, folder


def test_command(parser: argparse.ArgumentParser) -> Handler:
    _config_arguments(parser)
    _weights_arguments(parser)
    parser.add_argument("--split", default="test", help="data split to score (default: test)")
    parser.add_argument("--out", help="report folder (default: <checkpoint's run folder>/evaluation/<split>)")
    parser.add_argument("--save-images", action="store_true", help="also write the output images")
    parser.add_argument("--save-translated", action="store_true", help="also write the translator's images")
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images and list them")

    def handle(args: argparse.Namespace) -> None:
        done = test(
            args.file,
            args.overrides,
            **_weights_options(args),
            split=args.split,
            out=args.out,
            save_images=args.save_images,
            save_translated=args.save_translated,
            skip_bad=args.skip_bad,
            device=args.device,
            variant=args.variant,
        )
        if done is not None:
            print((done[1] / "summary.md").read_text())

    return handle


# ---------------------------------------------------------------------- ablation


def ablation(
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
) -> AblationResult:
    """Train every variant of a config (or ``variants``) under every seed and score each on every test split;
    trials finished before (same explicit config) are not retrained. Writes ``<runs_dir>/<name>-ablation/``:
    results (CSV, JSON, per image), Markdown and LaTeX tables and (``report``) the HTML report.

    ``seeds``: a count N (the config's ``seed`` and the N - 1 after it) or a list; ``splits``: the test splits.
    Either defaults to the file's ``ablation:`` section (``seeds:``, ``splits:``), else one seed and ``test``.
    ``jobs`` > 1 runs that many trials at once, each in its own ``deblurstack train``/``test`` subprocesses on one of
    ``devices`` (default: every CUDA device); see :func:`~deblurstack.engine.studies.run_ablation`.
    """
    from deblurstack.engine.studies import run_ablation

    _folder_to_write(runs_dir, "--runs-dir")
    return run_ablation(
        config,
        overrides,
        variants=variants,
        seeds=seeds,
        splits=splits,
        runs_dir=runs_dir,
        device=device,
        jobs=jobs,
        devices=devices,
        report=report,
    )


def ablation_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("file", help="YAML config with a variants section")
    parser.add_argument("overrides", nargs="*", help="dotted overrides applied to every variant")
    parser.add_argument("--variants", help="comma-separated subset (default: all, in file order)")
    parser.add_argument(
        "--seeds",
        help="N: train each variant under the config's seed and the N-1 after it; or a list 0,1,2 "
        "(default: ablation.seeds of the file, else 1)",
    )
    parser.add_argument(
        "--splits",
        "--split",
        dest="splits",
        help="comma-separated test splits to score (default: ablation.splits of the file, else test)",
    )
    parser.add_argument("--no-report", action="store_true", help="write results and tables only, no HTML report")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument(
        "--jobs",
        type=int,
        help="trials at a time, each in its own train/test subprocesses on one of --devices "
        "(default: the number of --devices, else 1: one after the other in this process)",
    )
    parser.add_argument(
        "--devices",
        help="comma-separated devices for --jobs, one a trial, shared in turn when fewer "
        "(default: every CUDA device, else --device), e.g. cuda:0,cuda:1",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="write every trial's config to <runs-dir>/<name>-ablation/jobs/ and print its train command "
        "(for torchrun or a scheduler), training nothing; the ablation run afterwards scores the finished runs",
    )

    def handle(args: argparse.Namespace) -> None:
        if args.plan:
            from deblurstack.engine.studies import plan_trials

            for file in plan_trials(
                args.file,
                args.overrides,
                variants=_comma_list(args.variants),
                seeds=_seeds(args.seeds),
                splits=_comma_list(args.splits),
                runs_dir=args.runs_dir,
            ):
                print(shlex.join(["deblurstack", "train", str(file), "--runs-dir", args.runs_dir]))
            return
        done = ablation(
            args.file,
            args.overrides,
            variants=_comma_list(args.variants),
            seeds=_seeds(args.seeds),
            splits=_comma_list(args.splits),
            runs_dir=args.runs_dir,
            device=args.device,
            jobs=args.jobs,
            devices=_comma_list(args.devices),
            report=not args.no_report,
        )
        print(done.summary())
        print(f"ablation table: {done.table} (LaTeX: {done.table.with_suffix('.tex')})")
        if done.report is not None:
            print(f"report: {done.report}")
        print(f"\n{done.table.read_text()}", end="")

    return handle


# ---------------------------------------------------------------------- compare, report


def compare(results: str | Path, a: str, b: str, *, split: str | None = None, metric: str | None = None) -> Comparison:
    """Variant ``a`` against ``b`` of an ablation, paired over the same images and seeds: the mean difference
    ``a - b`` with a bootstrap 95 % interval (10,000 resamples of the images) and the images better or worse."""
    from deblurstack.engine.studies import compare as compare_study
    from deblurstack.engine.studies import load_study

    return compare_study(load_study(results), a, b, split=split, metric=metric)


def compare_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("results", metavar="ABLATION_OR_RUNS", help="an ablation folder, or a runs folder holding one")
    parser.add_argument("--a", required=True, metavar="VARIANT", help="variant (or input, the blurry input)")
    parser.add_argument("--b", required=True, metavar="VARIANT", help="the variant it is compared with")
    parser.add_argument("--split", help="test split (default: the first the ablation scored)")
    parser.add_argument("--metric", help="metric (default: psnr, else the first)")
    return lambda args: print(compare(args.results, args.a, args.b, split=args.split, metric=args.metric).text())


def report(results: str | Path) -> Path:
    """Write the ablation's self-contained HTML report (``report.html``, plots also as ``report/*.png``)."""
    from deblurstack.engine.report import write_report
    from deblurstack.engine.studies import load_study

    study = load_study(results)
    assert study.folder is not None
    return write_report(study, study.folder)


def report_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("results", metavar="RUNS_OR_ABLATION", help="an ablation folder, or a runs folder holding one")
    return lambda args: print(f"report: {report(args.results)}")


# ---------------------------------------------------------------------- run


def run(
    config: str | Path,
    inputs: Sequence[str],
    out: str | Path,
    overrides: Sequence[str] = (),
    *,
    checkpoint: str | Path | None = None,
    weights: Weights = "auto",
    tile: int | None = None,
    overlap: int = TILE_OVERLAP,
    tlc: int | None = None,
    aux_from: str = "test",
    skip_bad: bool = False,
    save_translated: bool = False,
    overwrite: bool = False,
    device: str = "auto",
    variant: str | None = None,
) -> tuple[list[Path], list[str]]:
    """Deblur image files, folders or glob patterns into ``out``; returns the files written and the problems of
    the files skipped (``skip_bad``). The priors' inputs (SAM masks, say) come from the mask sources of the data
    split ``aux_from``. Files already in ``out`` are replaced only with ``overwrite``, and an input never is."""
    from deblurstack.compose import resolve_config
    from deblurstack.engine.distributed import resolve_device
    from deblurstack.engine.inference import expand_inputs, run_on_files

    _check_tiles(tile, overlap)
    resolved = resolve_config(config, _with_tlc(overrides, tlc), variant=variant, splits=[aux_from])
    files = expand_inputs(inputs)
    out = _folder_to_write(out, "--out")
    _check_outputs(files, out, overwrite, save_translated)
    needed = {name: node for node in resolved.priors for name in node.record.requires}
    sources = {}
    if needed:
        if aux_from not in resolved.datasets:
            raise ConfigError(
                f"{config}: data.{aux_from}: no such split to take the priors' inputs from "
                f"(--aux-from; splits: {', '.join(resolved.datasets) or 'none'})"
            )
        given = resolved.datasets[aux_from].aux
        for name, node in needed.items():
            if name not in given:
                raise ConfigError(
                    f"{config}: {node.keypath}: prior {node.type!r} needs input {name!r}: give "
                    f"data.{aux_from}.aux.{name} a mask source (--aux-from picks another split)"
                )
        sources = {name: source for name, source in resolved.build_aux_sources(aux_from).items() if name in needed}
    place = resolve_device(device)
    stack = resolved.build_stack()
    _load_weights(stack, resolved, config, checkpoint, weights)
    if save_translated and stack.translator is None:
        raise ConfigError(f"{config}: --save-translated: the stack has no translator (stack.translator)")
    return run_on_files(
        stack.to(place), files, out, place, tile, overlap, sources, skip_bad, save_translated=save_translated
    )


def run_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("file", help="YAML config file of the stack")
    parser.add_argument(
        "inputs", nargs="+", help="image files, folders or glob patterns, and any dotted overrides (KEY=VALUE)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--variant", help="apply one of the file's variants first")
    parser.add_argument(
        "--aux-from",
        default="test",
        metavar="SPLIT",
        help="data split whose aux mask sources compute the priors' inputs (default: test)",
    )
    parser.add_argument("--skip-bad", action="store_true", help="skip unreadable images (listed at the end)")
    parser.add_argument(
        "--save-translated", action="store_true", help="also write the translator's images to <out>/translated"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace files already in --out (never an input)")
    _weights_arguments(parser)
    parser.set_defaults(overrides=[])

    def handle(args: argparse.Namespace) -> None:
        # an argument that names no file and reads KEY=VALUE is an override, as on every other command
        overrides = [a for a in args.inputs if is_override(a) and not Path(a).exists()]
        inputs = [a for a in args.inputs if a not in overrides]
        written, skipped = run(
            args.file,
            inputs,
            args.out,
            [*overrides, *args.overrides],
            **_weights_options(args),
            aux_from=args.aux_from,
            skip_bad=args.skip_bad,
            save_translated=args.save_translated,
            overwrite=args.overwrite,
            device=args.device,
            variant=args.variant,
        )
        for problem in skipped:
            print(f"skipped: {problem}")
        print(f"{len(written)} image(s) written to {args.out}" + (f", {len(skipped)} skipped" if skipped else ""))

    return handle


# ---------------------------------------------------------------------- export


def export(
    config: str | Path,
    out: str | Path,
    overrides: Sequence[str] = (),
    *,
    checkpoint: str | Path | None = None,
    weights: Weights = "auto",
    variant: str | None = None,
    overwrite: bool = False,
) -> str:
    """Export the stack to ONNX, checked with onnxruntime; returns a one-line account of the export. An existing
    ``out`` is replaced only with ``overwrite``."""
    from deblurstack.checkpoint import load_stack_weights
    from deblurstack.compose import resolve_config
    from deblurstack.engine.export import CHECK_SIZE, export_onnx

    if Path(out).suffix.lower() != ".onnx":
        raise ConfigError(f"{out}: an ONNX file's name ends in .onnx")
    if Path(out).is_dir():
        raise ConfigError(f"{out}: a folder, not a file name")
    if Path(out).exists() and not overwrite:
        raise ConfigError(f"{out}: already exists; pass --overwrite to replace it, or choose another name")
    resolved = resolve_config(config, overrides, variant=variant, splits=[])
    for node in resolved.priors:
        if node.record.requires:
            raise ConfigError(
                f"{config}: {node.keypath}: prior {node.type!r} needs input "
                f"{', '.join(node.record.requires)}; exported stacks take the image only"
            )
    stack = resolved.build_stack()
    loaded = load_stack_weights(stack, Path(checkpoint), weights) if checkpoint else "random weights"
    route, difference = export_onnx(stack, out)
    height, width = CHECK_SIZE
    return (
        f"{out}: ONNX by {route}, {loaded}; on a {height}x{width} input it differs from PyTorch "
        f"by at most {difference:.2e}"
    )


def export_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("file", help="YAML config file of the stack")
    parser.add_argument("out", help="output .onnx file")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    parser.add_argument("--checkpoint", help="weights to export (default: random, for a trial export)")
    parser.add_argument("--weights", choices=("auto", "ema", "model"), default="auto")
    parser.add_argument("--variant", help="apply one of the file's variants first")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing file")

    def handle(args: argparse.Namespace) -> None:
        print(
            export(
                args.file,
                args.out,
                args.overrides,
                checkpoint=args.checkpoint,
                weights=args.weights,
                variant=args.variant,
                overwrite=args.overwrite,
            )
        )

    return handle


# ---------------------------------------------------------------------- synth, masks, crop


def synth(
    source: str | Path,
    out: str | Path,
    *,
    synthesizer: str = "motion_blur",
    params: dict[str, Any] | None = None,
    per_image: int = 1,
    seed: int = 0,
    max_side: int | None = None,
) -> list[str]:
    """Make pairs ``<out>/input``, ``<out>/target`` (and ``<out>/<aux>``: ``blur_mask`` for ``lbs``; one folder,
    no train/test split) with any synthesizer."""
    from deblurstack.compose import node_provides, resolve_node
    from deblurstack.engine.prepare import synthesize

    out = _folder_to_write(out, "out")
    held = [folder for folder in ("input", "target") if (out / folder).is_dir() and any((out / folder).iterdir())]
    if held:  # new pairs among old ones would mix two datasets (and replace pairs of the same names)
        raise ConfigError(f"{out}: already holds a dataset ({held[0]}/ is not empty); choose another folder")
    resolved = resolve_node("synthesizer", {"type": synthesizer, **(params or {})}, "--type / --set")
    frames = resolved.record.frames
    frames = resolved.params[frames] if isinstance(frames, str) else frames
    return synthesize(source, out, resolved.build(), frames, seed, per_image, max_side, node_provides(resolved))


def synth_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument(
        "source", help="folder of sharp images (or of frame sequences), or 'skimage' for the photos scikit-image ships"
    )
    parser.add_argument("out", help="output folder: <out>/input, <out>/target (one split; run it once per split)")
    parser.add_argument("--type", default="motion_blur", help="synthesizer (default: motion_blur)")
    parser.add_argument(
        "--set",
        dest="params",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="synthesizer parameter (repeatable), e.g. --set max_length=25",
    )
    parser.add_argument("--per-image", type=_at_least(1), default=1, help="pairs made from each source image")
    parser.add_argument("--seed", type=_at_least(0), default=0)
    parser.add_argument("--max-side", type=_at_least(1), help="downscale larger images to this longer side first")

    def handle(args: argparse.Namespace) -> None:
        names = synth(
            args.source,
            args.out,
            synthesizer=args.type,
            params=_parse_settings(args.params),
            per_image=args.per_image,
            seed=args.seed,
            max_side=args.max_side,
        )
        folders = [str(p) for p in sorted(Path(args.out).iterdir()) if p.is_dir()]  # input, target, aux maps
        print(f"{len(names)} pairs written to {', '.join(folders)}")

    return handle


def masks(
    config: str | Path, overrides: Sequence[str] = (), *, split: str | None = None, variant: str | None = None
) -> list[str]:
    """Compute the auxiliary maps of every image in advance, into the caches the config names; one line a split."""
    from tqdm import tqdm

    from deblurstack.compose import resolve_config
    from deblurstack.masks import CachedSource

    resolved = resolve_config(config, overrides, variant=variant, splits=[split] if split else None)
    splits = [split] if split else [s for s, node in resolved.datasets.items() if node.aux]
    lines = []
    for name in splits:
        node = resolved.datasets.get(name)
        if node is None or not node.aux:
            raise ConfigError(f"{config}: data.{name}: no auxiliary inputs with a mask source to compute")
        uncached = [f"data.{name}.aux.{key}" for key, source in node.aux.items() if not source.options.get("cache")]
        if uncached:
            raise ConfigError(f"{config}: {uncached[0]}: set `cache: <folder>` so that computed maps are kept")
        dataset = resolved.build_dataset(name)
        for pair in tqdm(dataset.pairs, desc=f"maps for data.{name}", unit="image"):
            dataset.load(pair)
        caches = [s for s in dataset.aux_sources.values() if isinstance(s, CachedSource)]
        made = sum(cache.generated for cache in caches)
        lines.append(
            f"data.{name}: {len(dataset.pairs)} images, {made} maps computed, "
            f"{len(dataset.pairs) * len(caches) - made} already cached"
        )
    return lines


def masks_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("file", help="YAML config whose data sections name mask sources with a cache")
    parser.add_argument("overrides", nargs="*", help="dotted config overrides")
    parser.add_argument("--split", help="only this data split (default: every split with auxiliary inputs)")
    parser.add_argument("--variant", help="apply one of the file's variants first")
    return lambda args: print("\n".join(masks(args.file, args.overrides, split=args.split, variant=args.variant)))


def crop(sources: Sequence[str | Path], out: str | Path, *, size: int = 512, stride: int = 256) -> dict[str, int]:
    """Cut each folder into overlapping crops under ``<out>/<folder name>``; returns the crops per folder."""
    from deblurstack.engine.prepare import crop_folder

    _folder_to_write(out, "--out")
    return {str(source): crop_folder(source, Path(out) / Path(source).name, size, stride) for source in sources}


def crop_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("sources", nargs="+", help="folders to cut; each goes to <out>/<folder name>")
    parser.add_argument("--out", required=True)
    parser.add_argument("--size", type=_at_least(1), default=512)
    parser.add_argument("--stride", type=_at_least(1), default=256)

    def handle(args: argparse.Namespace) -> None:
        for source, count in crop(args.sources, args.out, size=args.size, stride=args.stride).items():
            print(f"{source}: {count} crops of {args.size} px (stride {args.stride})")

    return handle


# ---------------------------------------------------------------------- quickstart


def quickstart(
    *,
    data: str | Path = "data/quickstart",
    runs_dir: str | Path = "runs",
    overrides: Sequence[str] = (),
    data_only: bool = False,
) -> Path | None:
    """Synthesize a small dataset from the bundled photos (train, val and test splits), train a small stack on CPU,
    and score it on the held-out photos; returns the run folder (None with ``data_only``)."""
    from deblurstack.compose import resolve_node
    from deblurstack.config import load_config
    from deblurstack.engine.prepare import QuickstartRecipe, quickstart_data
    from deblurstack.params import Parameter

    config = EXAMPLES / "quickstart.yaml"
    data = _folder_to_write(data, "--data")
    _folder_to_write(runs_dir, "--runs-dir")
    overrides = [f"vars.data={data}", *overrides]
    recipe = load_config(config, overrides).data["vars"]  # not resolved: the data folders do not exist yet
    recipe, problem, location = Parameter("vars", QuickstartRecipe).check(recipe)
    if problem:
        raise ConfigError(f"{config}: {'.'.join(('vars', *location))}: {problem}")
    for index, name in enumerate(recipe["test_photos"]):
        if name not in recipe["photos"]:
            raise ConfigError(f"{config}: vars.test_photos.{index}: {name!r} is not one of vars.photos")
    if set(recipe["photos"]) <= set(recipe["test_photos"]):
        raise ConfigError(f"{config}: vars.photos: every photo is a test photo; nothing is left to train on")
    blur = resolve_node("synthesizer", recipe["blur"], "vars.blur", source=str(config))
    splits = quickstart_data(data, recipe, blur)
    leaves = recipe.get("dead_leaves", 0)
    print(
        f"quickstart data: {data} (train and val: {', '.join(splits['val'])}"
        f"{f'; train also: {leaves} dead-leaves images' if leaves else ''}; test: {', '.join(splits['test'])})"
    )
    if data_only:
        return None
    folder = train(config, overrides, runs_dir=runs_dir, device="cpu")
    done = test(
        config,
        overrides,
        checkpoint=folder / "checkpoints" / "best.pth",
        out=folder / "evaluation",
        save_images=True,
        device="cpu",
    )
    print((done[1] / "summary.md").read_text())
    return folder


def quickstart_command(parser: argparse.ArgumentParser) -> Handler:
    parser.add_argument("--data", default="data/quickstart", help="where the synthetic dataset goes")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--data-only", action="store_true", help="only synthesize the data (for other examples)")
    parser.add_argument("overrides", nargs="*", help="overrides of the quickstart config (examples/quickstart.yaml)")

    def handle(args: argparse.Namespace) -> None:
        folder = quickstart(data=args.data, runs_dir=args.runs_dir, overrides=args.overrides, data_only=args.data_only)
        if folder is not None:
            grids = sorted((folder / "images").glob("step_*.png"))
            print(f"run folder: {folder}")
            print(f"image grid (input | output | target): {grids[-1] if grids else 'none'}")

    return handle


#: command name -> (one-line help, adapter); ``deblurstack.cli`` adds each as a subcommand
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], Handler]]] = {
    "train": ("train a stack (torchrun for several processes)", train_command),
    "ablation": ("train every variant of a config under each seed, score it on each test split", ablation_command),
    "compare": ("two variants of an ablation, paired: mean difference with a bootstrap interval", compare_command),
    "report": ("an ablation's self-contained HTML report: table, plots, curves, image crops", report_command),
    "test": ("score a trained stack on a data split", test_command),
    "run": ("deblur image files", run_command),
    "export": ("export a stack to ONNX (checked with onnxruntime)", export_command),
    "synth": ("make a paired dataset from sharp images", synth_command),
    "masks": ("compute the auxiliary maps (SAM masks ...) in advance", masks_command),
    "crop": ("cut images into overlapping crops (GoPro 512/256)", crop_command),
    "quickstart": ("synthesize data from the bundled photos, train, evaluate (CPU, minutes)", quickstart_command),
}


# ---------------------------------------------------------------------- shared pieces


def is_override(argument: str) -> bool:
    """Whether a command-line argument reads as a dotted config override ``KEY=VALUE``."""
    return "=" in argument and not argument.startswith("-")


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="YAML config file")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.iterations=100")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu or cuda")
    parser.add_argument("--variant", help="apply one of the file's variants first")


def _weights_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        help="training checkpoint or state dict of the stack (default: the weights the config names: "
        "stack.checkpoint or components')",
    )
    parser.add_argument(
        "--weights",
        choices=("auto", "ema", "model"),
        default="auto",
        help="EMA weights (params_ema) or the trained ones (params); auto: EMA when saved",
    )
    parser.add_argument("--tile", type=_at_least(1), help="run in overlapping tiles of this size (bounded memory)")
    parser.add_argument(
        "--overlap", type=_at_least(0), default=TILE_OVERLAP, help=f"tile overlap in pixels ({TILE_OVERLAP})"
    )
    parser.add_argument(
        "--tlc",
        type=_at_least(1),
        metavar="TRAIN_SIZE",
        help="test-time local converter for a model trained on patches of this size (NAFNetLocal: 256); "
        "the same as the override stack.backbone.tlc.train_size=TRAIN_SIZE",
    )


def _weights_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "checkpoint": args.checkpoint,
        "weights": args.weights,
        "tile": args.tile,
        "overlap": args.overlap,
        "tlc": args.tlc,
    }


def _with_tlc(overrides: Sequence[str], tlc: int | None) -> list[str]:
    """The overrides, plus ``--tlc TRAIN_SIZE`` as the backbone's ``tlc`` option."""
    return [*overrides, *([f"stack.backbone.tlc={{train_size: {tlc}}}"] if tlc is not None else [])]


def _comma_list(value: str | None) -> list[str] | None:
    return [item.strip() for item in value.split(",") if item.strip()] if value else None


def _seeds(value: str | None) -> int | list[int] | None:
    """``--seeds N`` (a count) or ``--seeds 0,4,7`` (these seeds)."""
    if value is None:
        return None
    try:
        return [int(s) for s in value.split(",") if s.strip()] if "," in value else int(value)
    except ValueError:
        raise ConfigError(f"--seeds {value!r}: a count N or a comma-separated list of integers") from None


def _parse_settings(settings: list[str]) -> dict[str, Any]:
    parsed = {}
    for setting in settings:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {setting!r}: expected key=value")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else ""
    return parsed


def _folder_to_write(path: str | Path, option: str) -> Path:
    """``path`` as a folder to write into: one that is a file is refused before anything runs."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: a file, not a folder")
    return path


def _check_outputs(inputs: Sequence[Path], out: Path, overwrite: bool, translated: bool) -> None:
    """Refuse, before any work, a run that would write one file twice, replace an input, or (without
    ``overwrite``) replace what ``out`` already holds."""
    from deblurstack.engine.inference import output_name

    planned: dict[Path, Path] = {}
    for source in inputs:
        for target in (out / output_name(source), *([out / "translated" / output_name(source)] if translated else [])):
            if target in planned:
                raise ConfigError(f"--out {out}: {planned[target]} and {source} would both be written to {target}")
            planned[target] = source
    sources = {source.resolve() for source in inputs}
    replaced = [target for target in planned if target.resolve() in sources]
    if replaced:
        raise ConfigError(f"--out {out}: would replace the input {replaced[0]}; choose another folder")
    existing = [target for target in planned if target.exists()]
    if existing and not overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise ConfigError(
            f"--out {out}: {existing[0]}{more} already exist(s); pass --overwrite to replace them, or choose "
            "another folder"
        )


def _check_tiles(tile: int | None, overlap: int) -> None:
    """The tiling :func:`~deblurstack.engine.inference.predict` can do, refused as options before any work."""
    if tile is not None and not 0 <= overlap < tile / 2:
        raise ConfigError(f"--tile {tile} --overlap {overlap}: the overlap must be at least 0 and under half the tile")


def _at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _report_folder(checkpoint: str | Path | None, resolved: ResolvedConfig, split: str) -> Path:
    """``<run>/evaluation/<split>``, or ``<split>_1``, ``<split>_2`` ... when an earlier report is there."""
    from deblurstack.engine.runs import run_folder_of

    if checkpoint is None:  # weights named in the config
        run = Path("runs") / str(resolved.data.get("name", "evaluation"))
    else:
        run = run_folder_of(checkpoint) or Path(checkpoint).parent
    candidate, suffix = run / "evaluation" / split, 0
    while candidate.exists() and any(candidate.iterdir()):
        suffix += 1
        candidate = run / "evaluation" / f"{split}_{suffix}"
    return candidate


def _load_weights(
    stack: Any, resolved: ResolvedConfig, config: str | Path, checkpoint: str | Path | None, weights: Weights
) -> str:
    """The checkpoint file, or else the weights the config names; a stack without weights is an error."""
    from deblurstack.checkpoint import load_stack_weights

    if checkpoint:
        return f"{checkpoint} ({load_stack_weights(stack, Path(checkpoint), weights)})"
    named = [n.keypath for _, n in resolved.model_nodes() if n.options.get("checkpoint")]
    if resolved.checkpoint:
        return f"stack.checkpoint {resolved.checkpoint['path']}"
    if named:
        return "checkpoints of " + ", ".join(named)
    raise ConfigError(f"{config}: no weights: pass --checkpoint, or set stack.checkpoint in the config")


def _is_main_process() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


__all__ = [
    "COMMANDS",
    "EXAMPLES",
    "ablation",
    "compare",
    "crop",
    "export",
    "is_override",
    "masks",
    "quickstart",
    "report",
    "run",
    "synth",
    "test",
    "train",
]
