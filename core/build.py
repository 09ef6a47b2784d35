"""Building what a checked configuration describes: the stack, datasets with their mask sources, metrics and
the trainer. :func:`deblurstack.compose.resolve_config` checks first; :class:`~deblurstack.compose.ResolvedConfig`'s
``build_*`` methods call these functions.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import yaml

from deblurstack.checkpoint import STATE_DICT_KEYS, load_state, load_weights, read_state_dict
from deblurstack.compose import prior_channels, unique_names
from deblurstack.engine.evaluation import NamedMetric
from deblurstack.engine.runs import run_folder_of
from deblurstack.errors import CheckpointError, ConfigError
from deblurstack.masks import CachedSource, PredeblurredSource
from deblurstack.records import IMAGE_CHANNELS
from deblurstack.stack import STATE_PREFIXES, Stack, WeightedLoss
from deblurstack.tlc import enable_tlc

if TYPE_CHECKING:
    from deblurstack.compose import ResolvedConfig, ResolvedNode


def make_stack(resolved: ResolvedConfig) -> Stack:
    """Build every module of the stack, load checkpoints and freeze what is frozen."""
    translator = _make_model(resolved, resolved.translator, "translator") if resolved.translator else None
    backbone = _make_model(resolved, resolved.backbone, "backbone")
    if resolved.backbone.options.get("tlc"):
        in_channels = resolved.backbone.params.get("in_channels", IMAGE_CHANNELS)
        if not enable_tlc(backbone, resolved.backbone.options["tlc"]["train_size"], in_channels):
            raise ConfigError(
                resolved.config.error(
                    f"{resolved.backbone.keypath}.tlc",
                    f"backbone {resolved.backbone.type!r} built without global average pooling: TLC does not apply",
                )
            )
    points = dict(getattr(backbone, "insertion_points", {}) or {})
    priors = []
    for index, node in enumerate(resolved.priors):
        injected = {"insertion_points": points} if node.record.guidance else {}
        prior = _make_model(resolved, node, f"priors.{index}", **injected)
        declared = prior_channels(node)
        if getattr(prior, "out_channels", 0) != declared:
            raise ConfigError(
                resolved.config.error(
                    node.keypath,
                    f"prior {node.type!r} built with out_channels={getattr(prior, 'out_channels', 0)}, "
                    f"but its record declares {declared} (a bug in plugin {node.component.plugin!r})",
                )
            )
        priors.append(prior)
    losses, names = {}, unique_names(resolved.losses)
    for name, node in zip(names, resolved.losses, strict=True):
        losses[name] = WeightedLoss(
            node.build(), node.options.get("weight", 1.0), node.record.multiscale, node.record.requires
        )
    frozen = [name for name, node in resolved.model_nodes() if node.options.get("frozen")]
    stack = Stack(backbone, priors, translator, losses, frozen, resolved.keep_input_low_frequencies)
    if resolved.checkpoint:
        try:
            load_weights(
                stack, resolved.checkpoint["path"], key=resolved.checkpoint["key"], strict=resolved.checkpoint["strict"]
            )
        except CheckpointError as error:
            raise ConfigError(resolved.config.error("stack.checkpoint", str(error))) from None
    return stack


def make_dataset(resolved: ResolvedConfig, split: str) -> Any:
    """The dataset of ``data.<split>``, with its auxiliary-input sources built and attached."""
    if split not in resolved.datasets:
        raise ConfigError(
            resolved.config.error("data", f"no split {split!r} (splits: {', '.join(resolved.datasets) or 'none'})")
        )
    sources = make_aux_sources(resolved, split)
    return resolved.datasets[split].build(aux_sources=sources) if sources else resolved.datasets[split].build()


def make_aux_sources(resolved: ResolvedConfig, split: str) -> dict[str, Any]:
    """The mask sources of ``data.<split>.aux`` by input name, cached and pre-deblurring as configured."""
    return {name: _make_mask_source(source) for name, source in resolved.datasets[split].aux.items()}


def _make_mask_source(node: ResolvedNode) -> Any:
    """The source, seeing pre-deblurred images and caching its maps when the node says so."""
    source = node.build()
    if node.options.get("predeblur"):
        source = PredeblurredSource(source, **node.options["predeblur"])
    if node.options.get("cache"):
        parameters = {k: v for k, v in node.to_dict().items() if k != "cache"}  # moving the cache keeps its keys
        source = CachedSource(source, node.options["cache"], parameters)
    return source


def make_metrics(resolved: ResolvedConfig) -> list[NamedMetric]:
    """The metrics as :class:`~deblurstack.engine.evaluation.NamedMetric` (a repeated type gets a
    suffix: ``ssim``, ``ssim_1``)."""
    names = unique_names(resolved.metrics)
    return [
        NamedMetric(name, node.build(), node.record.requires, node.record.higher_is_better)
        for name, node in zip(names, resolved.metrics, strict=True)
    ]


def make_trainer(resolved: ResolvedConfig) -> Any:
    if resolved.trainer is None:
        raise ConfigError(
            resolved.config.error("train", "missing: name a trainer, e.g. train: {type: supervised, ...}")
        )
    return resolved.trainer.build()


def _make_model(resolved: ResolvedConfig, node: ResolvedNode, place: str, **injected: Any) -> Any:
    """Build a model node and load its ``checkpoint``: a file of its own, or a deblurstack run's checkpoint of a
    whole stack, whose part at this node's ``place`` in the stack (``backbone``, ``priors.0``) it takes."""
    module = node.build(**injected)
    checkpoint = node.options.get("checkpoint")
    if node.options.get("frozen") and not checkpoint and any(True for _ in module.parameters()):
        message = f"a frozen {node.record.kind} learns nothing from random weights: set {node.keypath}.checkpoint"
        raise ConfigError(resolved.config.error(f"{node.keypath}.frozen", message))
    if checkpoint:
        path = checkpoint["path"]
        try:
            # a training checkpoint's EMA weights before its raw ones, as ``deblurstack test`` scores them
            state = read_state_dict(path, checkpoint["key"], candidates=("params_ema", *STATE_DICT_KEYS))
            if any(key.startswith(STATE_PREFIXES) for key in state):  # a deblurstack stack: this part of it
                state = {key.removeprefix(f"{place}."): v for key, v in state.items() if key.startswith(f"{place}.")}
                if not state:
                    raise CheckpointError(f"{path}: a stack's checkpoint without a {place} (no {place}.* keys)")
                if place == "backbone":
                    _warn_of_other_low_frequencies(resolved, node, path)
            load_state(module, state, source=str(path), strict=checkpoint["strict"])
        except CheckpointError as error:
            raise ConfigError(resolved.config.error(f"{node.keypath}.checkpoint", str(error))) from None
    return module


def _warn_of_other_low_frequencies(resolved: ResolvedConfig, node: ResolvedNode, path: str) -> None:
    """A backbone trained in a run whose stack kept the input's low frequencies (``stack.keep_input_low_frequencies``,
    which is not part of the weights) gives other outputs in a stack that keeps others, or none: say so."""
    run = run_folder_of(path)
    if run is None or not (run / "config.yaml").is_file():
        return
    try:
        stack = (yaml.safe_load((run / "config.yaml").read_text()) or {}).get("stack") or {}
    except (OSError, yaml.YAMLError, AttributeError):
        return
    trained, here = stack.get("keep_input_low_frequencies"), resolved.keep_input_low_frequencies
    if trained != here:
        warnings.warn(
            f"{node.keypath}.checkpoint: {path} was trained in a stack with keep_input_low_frequencies {trained}, "
            f"this stack has {here}: its outputs differ from that run's (set stack.keep_input_low_frequencies)",
            stacklevel=2,
        )


__all__ = ["make_aux_sources", "make_dataset", "make_metrics", "make_stack", "make_trainer"]
