"""From a configuration to checked components, and from those to a built Stack.

:func:`resolve_config` checks the whole composition before any module is built: every
component name, preset and parameter, the channel arithmetic between priors and backbone,
guidance insertion points, frozen parts, and the auxiliary inputs that priors, losses and
metrics require against what each dataset provides. All problems are reported together, each
located by file and YAML key path. :func:`build_stack` then builds the modules.

A configuration has these sections::

    name: my_experiment
    seed: 0
    vars: {data: /data/gopro}             # free values to interpolate: ${vars.data}
    stack:
      translator: {type: ..., checkpoint: ..., frozen: false}    # optional
      priors:     [{type: ..., ...}]                             # optional
      backbone:   {type: unet.small, ...}                        # required
      losses:     [{type: psnr, weight: 1.0}]
      keep_input_low_frequencies: 16.0                           # optional: see Stack
    data:                                   # split name -> dataset
      train: {type: ..., aux: {masks: {type: <mask source>}}}
    metrics: [{type: psnr}]
    train: {type: <trainer>, ...}

``type: name.preset`` starts from a preset of the component; the other keys of a node are the
factory's parameters, except the reserved options ``checkpoint`` and ``frozen`` (models),
``tlc`` (backbones: ``{train_size: 256}``), ``weight`` (losses) and ``aux`` (datasets).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo

from deblurstack.config import Config, config_from_dict, load_config
from deblurstack.errors import ConfigError, DeblurstackError, did_you_mean, one_line
from deblurstack.params import Signature, read_signature, references
from deblurstack.records import IMAGE_CHANNELS, KINDS, ComponentRecord, TrainingSplit
from deblurstack.registry import Component, PluginManager, get_plugin_manager

#: a run's name is a folder name under the runs folder, never a path
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: ``vars`` holds free values for ``${vars...}`` interpolation (paths, sizes); nothing reads it directly
SECTIONS = ("name", "seed", "vars", "stack", "data", "metrics", "train")
#: the largest ``stack.keep_input_low_frequencies``: its kernel spans 6 sigma
MAX_LOWPASS_SIGMA = 256
STACK_KEYS = ("translator", "priors", "backbone", "losses", "checkpoint", "keep_input_low_frequencies")
#: inputs every sample has
BASIC_INPUTS = ("input", "target")
#: the data split trainers train on; losses' inputs are checked against it alone
TRAIN_SPLIT = "train"


@dataclass
class ResolvedNode:
    """A component node whose name, preset, parameters and options have been checked."""

    keypath: str
    component: Component
    preset: str | None
    params: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)
    aux: dict[str, ResolvedNode] = field(default_factory=dict)
    source: str = "<config>"
    signature: Signature | None = field(default=None, repr=False)

    @property
    def record(self) -> ComponentRecord:
        return self.component.record

    @property
    def type(self) -> str:
        return f"{self.component.name}.{self.preset}" if self.preset else self.component.name

    def to_dict(self) -> dict[str, Any]:
        """The node as it would be written in a fully explicit YAML file."""
        aux = {"aux": {name: node.to_dict() for name, node in self.aux.items()}} if self.aux else {}
        order = list(self.signature.parameters) if self.signature else []
        params = sorted(self.params.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order))
        return _plain({"type": self.type, **self.options, **aux, **dict(params)})

    def build(self, **injected: Any) -> Any:
        """Call the factory; a failure is reported with this node's key path."""
        try:
            return self.record.load_factory()(**self.params, **injected)
        except DeblurstackError as error:  # already one line: add where it happened
            raise ConfigError(f"{self.source}: {self.keypath}: {error}") from error
        except Exception as error:
            message = one_line(error)
            raise ConfigError(
                f"{self.source}: {self.keypath}: {self.record.kind} {self.type!r} could not be built: "
                f"{type(error).__name__}: {message}"
            ) from error


@dataclass
class ResolvedConfig:
    """A checked configuration: resolved nodes, and the explicit config data (``data``)."""

    config: Config
    data: dict[str, Any]
    backbone: ResolvedNode | None = None
    translator: ResolvedNode | None = None
    priors: list[ResolvedNode] = field(default_factory=list)
    losses: list[ResolvedNode] = field(default_factory=list)
    datasets: dict[str, ResolvedNode] = field(default_factory=dict)
    metrics: list[ResolvedNode] = field(default_factory=list)
    trainer: ResolvedNode | None = None
    checkpoint: dict[str, Any] | None = None  # weights of the whole stack (stack.checkpoint)
    keep_input_low_frequencies: float | None = None  # a Gaussian's sigma in pixels (stack.keep_input_low_frequencies)

    @property
    def trains_own_network(self) -> bool:
        """The trainer trains a network of its own, not a stack (its record: ``trains_stack=False``)."""
        return self.trainer is not None and not self.trainer.record.trains_stack

    # building lives in deblurstack.build; these methods are its entry points
    def build_stack(self) -> Any:
        """Build every module of the stack, load checkpoints and freeze what is frozen."""
        if self.trains_own_network:
            raise ConfigError(
                self.config.error(
                    "stack",
                    f"missing: this config trains a network of its own (trainer {self.trainer.type!r}), "
                    "not a deblurring stack",
                )
            )
        return _build().make_stack(self)

    def build_model(self) -> Any:
        """What ``train`` trains: the stack, or the trainer's own network where its record says
        ``trains_stack=False`` (built by the trainer's ``build_model()``)."""
        if self.trains_own_network:
            return self.build_trainer().build_model()
        return self.build_stack()

    def build_dataset(self, split: str) -> Any:
        """The dataset of ``data.<split>``, with its auxiliary-input sources built and attached."""
        return _build().make_dataset(self, split)

    def build_aux_sources(self, split: str) -> dict[str, Any]:
        """The mask sources of ``data.<split>.aux`` by input name, cached and pre-deblurring as configured."""
        return _build().make_aux_sources(self, split)

    def build_metrics(self) -> list[Any]:
        """The metrics as :class:`~deblurstack.engine.evaluation.NamedMetric` (a repeated type gets a
        suffix: ``ssim``, ``ssim_1``)."""
        return _build().make_metrics(self)

    def build_trainer(self) -> Any:
        """The trainer of the ``train`` section."""
        return _build().make_trainer(self)

    def nodes(self) -> list[ResolvedNode]:
        """Every resolved node: the stack's, the datasets' and their mask sources', metrics, trainer."""
        nodes = [node for _, node in self.model_nodes()] + self.losses + self.metrics
        for dataset in self.datasets.values():
            nodes += [dataset, *dataset.aux.values()]
        return nodes + ([self.trainer] if self.trainer else [])

    def model_nodes(self) -> list[tuple[str, ResolvedNode]]:
        nodes = [("translator", self.translator)] if self.translator else []
        nodes += [(f"priors.{i}", node) for i, node in enumerate(self.priors)]
        return nodes + ([("backbone", self.backbone)] if self.backbone else [])


def _build() -> Any:
    from deblurstack import build  # imports torch: only when something is built

    return build


def resolve_config(
    config: Config | Mapping[str, Any] | str | Path,
    overrides: Sequence[str] = (),
    manager: PluginManager | None = None,
    variant: str | None = None,
    splits: Sequence[str] | None = None,
) -> ResolvedConfig:
    """Check a configuration completely; raise :class:`ConfigError` listing every problem.

    A file's ``variant`` (one of its ``variants``) is applied before ``overrides``. ``splits``: the data
    splits the caller will read (default: all); the folders and files of the others need not exist (scoring
    on ``test`` needs no training data on the machine), everything else about them is checked.
    """
    config = _as_config(config, overrides, variant)
    return _Resolver(config, manager or get_plugin_manager(), splits).resolve()


def build_stack(
    config: Config | Mapping[str, Any] | str | Path,
    overrides: Sequence[str] = (),
    manager: PluginManager | None = None,
    variant: str | None = None,
) -> Any:
    """Build the :class:`~deblurstack.stack.Stack` a configuration (a file, a dict or a Config) describes."""
    return resolve_config(config, overrides, manager, variant).build_stack()


def explicit_stack(resolved: ResolvedConfig) -> dict[str, Any]:
    """The ``stack`` section with every parameter written out."""
    stack: dict[str, Any] = {}
    if resolved.translator:
        stack["translator"] = resolved.translator.to_dict()
    stack["priors"] = [node.to_dict() for node in resolved.priors]
    if resolved.backbone:
        stack["backbone"] = resolved.backbone.to_dict()
    stack["losses"] = [node.to_dict() for node in resolved.losses]
    if resolved.checkpoint:
        stack["checkpoint"] = dict(resolved.checkpoint)
    if resolved.keep_input_low_frequencies:
        stack["keep_input_low_frequencies"] = resolved.keep_input_low_frequencies
    return stack


def resolve_node(
    kind: str,
    node: Mapping[str, Any],
    keypath: str = "",
    manager: PluginManager | None = None,
    source: str = "<command line>",
    check_paths: bool = True,
) -> ResolvedNode:
    """Check one ``{type: ..., ...}`` node outside a configuration file (a synthesizer, say); ``check_paths=False``
    leaves the files and folders it names unchecked."""
    resolver = _Resolver(config_from_dict({}, source=source), manager or get_plugin_manager())
    resolved = resolver.node(kind, node, keypath or kind, check_paths=check_paths)
    if resolver.problems or resolved is None:
        raise ConfigError(resolver.problems)
    return resolved


#: where :func:`nested_node` checks a node; its problems are then told relative to the parameter holding it
_NESTED = "@"


def nested_node(
    kind: str, node: Any, build: bool = False, options: Sequence[str] = (), check_paths: bool = True
) -> ResolvedNode:
    """Check a node of ``kind`` that a factory parameter holds (a trainer's discriminator, a dataset's
    synthesizer), and with ``build`` build it once on the meta device, so that what only its factory checks is
    refused too (without allocating, or reading weights beyond their shapes).

    The builder's reserved options (``checkpoint``, ``frozen``, ``aux``, ...) act only on the config's own nodes,
    so a nested node may carry only those in ``options`` (which the holding factory applies: a loss's ``weight``).
    Problems raise a ``ValueError`` whose message locates each relative to that parameter (``norm: must be one
    of ...``), to which the config check adds the file and the parameter's key path."""
    if not isinstance(node, Mapping):
        raise ValueError(f"must be a {kind} node {{type: name, ...}}, got {node!r}")
    try:
        resolved = resolve_node(kind, node, _NESTED, source=_NESTED, check_paths=check_paths)
    except ConfigError as error:
        raise ValueError("; ".join(_relative(problem) for problem in error.problems)) from None
    ignored = [name for name in resolved.options if name in node and name not in options]  # given, not defaulted
    if ignored:
        raise ValueError(
            f"{', '.join(ignored)}: not applied to a {kind} inside another component's parameters"
            + (f" (only {', '.join(options)} is)" if options else "")
        )
    if build:
        import torch

        try:
            with torch.device("meta"):
                resolved.build()
        except ConfigError as error:
            raise ValueError("; ".join(_relative(problem) for problem in error.problems)) from None
    return resolved


def _relative(problem: str) -> str:
    """A problem of a node checked at :data:`_NESTED`, without that location: ``max_length: must be ...``."""
    for prefix in (f"{_NESTED}: {_NESTED}: ", f"{_NESTED}: {_NESTED}.", f"{_NESTED}: "):
        if problem.startswith(prefix):
            return problem[len(prefix) :]
    return problem


def as_node(node: Mapping[str, Any] | str) -> dict[str, Any]:
    """A node, given as one or by its type name alone (``patchgan`` for ``{type: patchgan}``)."""
    return {"type": node} if isinstance(node, str) else dict(node)


def ComponentNode(kind: str, options: Sequence[str] = ()) -> Any:  # noqa: N802 (reads as a type in signatures)
    """The annotation of a factory parameter that is a node of another kind, or its type name alone, checked (and
    built once, on the meta device) as such by the config check and replaced by its explicit form:
    ``discriminator: ComponentNode("discriminator") = "patchgan"`` (the factory reads it through :func:`as_node`).
    ``options``: the reserved options the factory applies itself (``("weight",)`` for losses it weighs)."""

    def explicit(node: Any, info: ValidationInfo) -> dict[str, Any]:
        paths = (info.context or {}).get("paths", True)
        return nested_node(kind, as_node(node), build=True, options=options, check_paths=paths).to_dict()

    return Annotated[dict[str, Any] | str, AfterValidator(explicit)]


def _as_config(
    config: Config | Mapping[str, Any] | str | Path, overrides: Sequence[str], variant: str | None
) -> Config:
    if isinstance(config, (str, Path)):
        return load_config(config, overrides, variant)
    if overrides or variant:
        raise TypeError("overrides and variants apply to configuration files; edit the mapping instead")
    return config if isinstance(config, Config) else config_from_dict(config)


class _Resolver:
    def __init__(self, config: Config, manager: PluginManager, splits: Sequence[str] | None = None) -> None:
        self.config = config
        self.manager = manager
        self.splits = None if splits is None else set(splits)
        self.trainer_checked = False  # the trainer node resolved without problems, so it can be built
        self.trainer: Any = None  # built by built_trainer, once
        self.trainer_tried = False
        self.problems: list[str] = []

    def problem(self, keypath: str, message: str) -> None:
        self.problems.append(self.config.error(keypath, message))

    def resolve(self) -> ResolvedConfig:
        data = self.config.data
        resolved = ResolvedConfig(self.config, {})
        for key in data:
            if key not in SECTIONS:
                self.problem(
                    str(key), f"unknown section{did_you_mean(str(key), SECTIONS)} (sections: {', '.join(SECTIONS)})"
                )
        if "name" in data and not (isinstance(data["name"], str) and RUN_NAME.fullmatch(data["name"])):
            self.problem(
                "name", f"must be a run name (letters, digits, '.', '_', '-'; not a path), got {data['name']!r}"
            )
        if "seed" in data and (isinstance(data["seed"], bool) or not isinstance(data["seed"], int)):
            self.problem("seed", f"must be an integer, got {data['seed']!r}")
        if data.get("train") is not None:
            before = len(self.problems)
            resolved.trainer = self.node("trainer", data["train"], "train")
            self.trainer_checked = len(self.problems) == before
        if resolved.trains_own_network:
            if data.get("stack") is not None:
                self.problem(
                    "stack",
                    f"trainer {resolved.trainer.type!r} trains a network of its own, not a stack: remove this section",
                )
        # with the trainer's node broken, whether a stack is due is unknown: only a given one is checked
        elif data.get("stack") is not None or data.get("train") is None or resolved.trainer is not None:
            self.resolve_stack(data.get("stack"), resolved)
        self.resolve_data(data.get("data"), resolved)
        resolved.metrics = self.node_list("metric", data.get("metrics"), "metrics")
        self.check_aux_inputs(resolved)
        self.check_references(resolved)
        self.check_training(resolved)
        if self.problems:
            raise ConfigError(self.problems)
        resolved.data = self.explicit(resolved)
        return resolved

    # ------------------------------------------------------------------ sections

    def resolve_stack(self, stack: Any, resolved: ResolvedConfig) -> None:
        if stack is None:
            self.problem("stack", "missing: a config needs a stack with at least a backbone")
            return
        if not isinstance(stack, Mapping):
            self.problem("stack", f"must be a mapping with keys {', '.join(STACK_KEYS)}, got {stack!r}")
            return
        for key in stack:
            if key not in STACK_KEYS:
                self.problem(
                    f"stack.{key}", f"unknown key{did_you_mean(str(key), STACK_KEYS)} (keys: {', '.join(STACK_KEYS)})"
                )
        if stack.get("checkpoint") is not None:
            options = {"checkpoint": stack["checkpoint"]}
            self.check_options(options, "stack")
            resolved.checkpoint = options["checkpoint"] if isinstance(options["checkpoint"], dict) else None
        if (sigma := stack.get("keep_input_low_frequencies")) is not None:
            if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not 1 <= sigma <= MAX_LOWPASS_SIGMA:
                self.problem(  # below one pixel the Gaussian is nearly a delta: the stack would return its input
                    "stack.keep_input_low_frequencies",
                    f"must be a Gaussian's sigma in pixels, at least 1 and at most {MAX_LOWPASS_SIGMA}, got {sigma!r}",
                )
            else:
                resolved.keep_input_low_frequencies = float(sigma)
        if stack.get("translator") is not None:
            resolved.translator = self.node("translator", stack["translator"], "stack.translator")
        resolved.priors = self.node_list("prior", stack.get("priors"), "stack.priors")
        if stack.get("backbone") is None:
            self.problem(
                "stack.backbone",
                "missing: every stack needs a backbone"
                f" (backbones: {', '.join(self.manager.components('backbone')) or 'none installed'})",
            )
        else:
            resolved.backbone = self.node("backbone", stack["backbone"], "stack.backbone")
        resolved.losses = self.node_list("loss", stack.get("losses"), "stack.losses")
        given_priors = stack.get("priors")
        every_prior_resolved = len(resolved.priors) == (len(given_priors) if isinstance(given_priors, list) else 0)
        if resolved.backbone is not None and every_prior_resolved:
            self.check_channels(resolved.backbone, resolved.priors)
            self.check_guidance(resolved.backbone, resolved.priors)
        backbone = resolved.backbone
        if backbone is not None and backbone.options.get("tlc") and not backbone.record.tlc:
            able = [c.name for c in self.manager.components("backbone").values() if c.record.tlc]
            self.problem(
                "stack.backbone.tlc",
                f"backbone {backbone.type!r} has no global average pooling, so TLC does "
                f"not apply (backbones with it: {', '.join(able) or 'none installed'})",
            )
        if resolved.backbone is not None and not resolved.backbone.record.multiscale:
            for node in resolved.losses:
                if node.record.multiscale:
                    self.problem(
                        node.keypath,
                        f"loss {node.type!r} trains every output scale, but backbone "
                        f"{resolved.backbone.type!r} returns one image",
                    )

    def check_channels(self, backbone: ResolvedNode, priors: list[ResolvedNode]) -> None:
        """Priors append channels to the image; the backbone must take exactly that many."""
        added = [(node, prior_channels(node)) for node in priors]
        for node, channels in added:
            if channels is None:
                self.problem(
                    node.keypath,
                    f"prior {node.type!r} declares out_channels={node.record.out_channels!r}, "
                    f"which is not an integer parameter of its factory (plugin {node.component.plugin!r})",
                )
        extra = sum(channels or 0 for _, channels in added)
        if not backbone.record.extra_channels:
            if extra:
                adders = ", ".join(
                    f"{node.keypath} ({node.type}) adds {channels}" for node, channels in added if channels
                )
                self.problem("stack.priors", f"backbone {backbone.type!r} takes no extra input channels, but {adders}")
            return
        if "in_channels" not in backbone.signature.parameters:
            self.problem(
                "stack.backbone",
                f"backbone {backbone.type!r} declares extra_channels but its factory has no "
                f"in_channels parameter (plugin {backbone.component.plugin!r})",
            )
            return
        expected = IMAGE_CHANNELS + extra
        stated = backbone.params.get("in_channels")  # present only when the YAML or a preset sets it
        if stated is not None and stated != expected:
            parts = " + ".join([f"image {IMAGE_CHANNELS}"] + [f"{n.type} {c}" for n, c in added if c])
            self.problem(
                "stack.backbone.in_channels",
                f"is {stated}, but {parts} = {expected}; leave it out and the builder sets it",
            )
        backbone.params["in_channels"] = expected

    def check_guidance(self, backbone: ResolvedNode, priors: list[ResolvedNode]) -> None:
        """Guidance priors need insertion points in the backbone, and take them from the builder."""
        for node in priors:
            if node.record.guidance:
                if not backbone.record.insertion_points:
                    self.problem(
                        node.keypath,
                        f"prior {node.type!r} guides backbone features, but backbone "
                        f"{backbone.type!r} has no insertion points",
                    )
                if "insertion_points" not in node.signature.parameters:
                    self.problem(
                        node.keypath,
                        f"prior {node.type!r} declares guidance but its factory has no "
                        f"insertion_points parameter (plugin {node.component.plugin!r})",
                    )
                elif "insertion_points" in node.params:
                    self.problem(
                        f"{node.keypath}.insertion_points", "is set by the builder from the backbone; leave it out"
                    )

    def resolve_data(self, data: Any, resolved: ResolvedConfig) -> None:
        if data is None:
            return
        if not isinstance(data, Mapping):
            self.problem("data", f"must map split names (train, val, ...) to datasets, got {data!r}")
            return
        for split, value in data.items():
            keypath = f"data.{split}"
            read = self.splits is None or split in self.splits  # paths of splits nobody reads are not looked at
            node = self.node("dataset", value, keypath, check_paths=read)
            if node is None:
                continue
            resolved.datasets[str(split)] = node
            aux = node.options.pop("aux", None) or {}
            if not isinstance(aux, Mapping):
                self.problem(f"{keypath}.aux", f"must map input names (e.g. masks) to mask sources, got {aux!r}")
                continue
            for name, source in aux.items():
                source_node = self.node("mask_source", source, f"{keypath}.aux.{name}", check_paths=read)
                if source_node is None:
                    continue
                if name not in source_node.record.provides:
                    self.problem(
                        f"{keypath}.aux.{name}",
                        f"mask source {source_node.type!r} provides "
                        f"{', '.join(source_node.record.provides) or 'nothing'}, not {name!r}",
                    )
                node.aux[str(name)] = source_node
            if node.aux and "aux_sources" not in node.signature.parameters:
                self.problem(
                    f"{keypath}.aux",
                    f"dataset {node.type!r} takes no auxiliary inputs (its factory has no aux_sources parameter)",
                )

    def check_aux_inputs(self, resolved: ResolvedConfig) -> None:
        """Each dataset must provide the inputs what runs on it reads.

        Priors' forward inputs are needed everywhere. On the splits the trainer trains on (its
        ``training_splits()``: ``train`` unless it says otherwise), what the losses it minimises there read:
        the stack's losses' inputs and the priors' ``training_inputs``. On the other splits, what metrics read.
        With the trainer's node broken, only the priors' inputs are checked.
        """
        training = self.training_splits(resolved)
        uses: dict[str, list[TrainingSplit]] = {}
        for use in training or ():
            uses.setdefault(use.split, []).append(use)
        for split, dataset in resolved.datasets.items():
            provided = {*BASIC_INPUTS, *node_provides(dataset), *dataset.aux}
            forward = split not in uses or any(use.stack_forward for use in uses[split])
            needs = [(node, name) for node in resolved.priors for name in node.record.requires] if forward else []
            if split in uses:
                if any(use.prior_losses for use in uses[split]):
                    needs += [(node, name) for node in resolved.priors for name in node.record.training_inputs]
                if any(use.stack_losses for use in uses[split]):
                    needs += [(node, name) for node in resolved.losses for name in node.record.requires]
            elif training is not None:  # with the trainer broken (its problems reported), the scored splits are unknown
                needs += [(node, name) for node in resolved.metrics for name in node.record.requires]
            reported = set()
            for consumer, name in needs:
                if name not in provided and (consumer.keypath, name) not in reported:
                    reported.add((consumer.keypath, name))
                    sources = [
                        c.name for c in self.manager.components("mask_source").values() if name in c.record.provides
                    ]
                    hint = f" ({', '.join(sources)})" if sources else " (no installed mask source provides it)"
                    self.problem(
                        f"data.{split}",
                        f"{consumer.record.kind} {consumer.type!r} ({consumer.keypath}) needs "
                        f"input {name!r}, which dataset {dataset.type!r} does not provide; add "
                        f"data.{split}.aux.{name} with a mask source{hint}",
                    )

    def training_splits(self, resolved: ResolvedConfig) -> list[TrainingSplit] | None:
        """What the trainer trains on (its ``training_splits()``), after checking the splits and parts it names;
        None when the config's trainer cannot be built (its problems are reported)."""
        default = [TrainingSplit(TRAIN_SPLIT, f"data.{TRAIN_SPLIT}")]
        if self.config.data.get("train") is None:
            return default
        trainer = self.built_trainer(resolved)
        if trainer is None:  # its node or its factory has problems, reported
            return None
        declared = getattr(trainer, "training_splits", None)
        if declared is None:
            return default
        uses = list(declared())
        parts = {name: node for name, node in resolved.model_nodes()}
        for use in uses:
            if use.split not in resolved.datasets and (self.splits is None or use.split in self.splits):
                self.problem(
                    use.keypath,
                    f"names no data split{did_you_mean(use.split, list(resolved.datasets))} "
                    f"(data splits: {', '.join(resolved.datasets) or 'none'})",
                )
            for part in use.trains:
                if part == "all":
                    continue
                if part not in parts and use.trains_keypath is None:  # the trainer's own choice of part
                    self.problem(f"stack.{part}", f"missing: trainer {resolved.trainer.type!r} trains it")
                elif part not in parts:
                    self.problem(
                        use.trains_keypath, f"{part!r} is no part of this stack (parts: all, {', '.join(parts)})"
                    )
                elif parts[part].options.get("frozen"):
                    where = use.trains_keypath or f"{parts[part].keypath}.frozen"
                    self.problem(where, f"{part!r} is frozen, but trainer {resolved.trainer.type!r} trains it")
        return uses

    def built_trainer(self, resolved: ResolvedConfig) -> Any:
        """The trainer, built once (its factory checks what its signature cannot); None if it cannot be built."""
        if resolved.trainer is None or not self.trainer_checked:
            return None
        if not self.trainer_tried:
            self.trainer_tried = True
            try:
                self.trainer = resolved.trainer.build()
            except ConfigError as error:
                self.problems.append(str(error))
        return self.trainer

    def check_references(self, resolved: ResolvedConfig) -> None:
        """Parameters hinted as :data:`~deblurstack.params.SplitName` or ``MetricName`` must name a split or
        metric of this config (a metric that reports several numbers has columns ``<name>_<number>``)."""
        splits, metrics = list(resolved.datasets), unique_names(resolved.metrics)
        known = {
            "split": (lambda name: name in splits, f"data splits: {', '.join(splits) or 'none'}"),
            "metric": (
                lambda name: any(name == m or name.startswith(f"{m}_") for m in metrics),
                f"metrics: {', '.join(metrics) or 'none'}",
            ),
        }
        for node in resolved.nodes():
            for name, value in node.params.items():
                parameter = node.signature.parameters.get(name) if node.signature else None
                for reference in references(parameter.annotation) if parameter else ():
                    exists, listing = known[reference.to]
                    for item in value if isinstance(value, (list, tuple)) else [value]:
                        if isinstance(item, str) and not exists(item):
                            self.problem(
                                f"{node.keypath}.{name}",
                                f"names no {reference.to} of this config{did_you_mean(item, splits + metrics)}: "
                                f"{item!r} ({listing})",
                            )

    def check_training(self, resolved: ResolvedConfig) -> None:
        """A trainer that minimises the stack's losses needs one; and what the trainer's ``check_config`` finds."""
        trainer = resolved.trainer
        minimises_stack_losses = trainer is not None and trainer.record.trains_stack_losses
        stack = self.config.data.get("stack")
        # only losses left out (or []): where some were written but refused, or the stack is malformed, the problem
        # reported there is the one mistake
        unwritten = isinstance(stack, Mapping) and stack.get("losses") in (None, [])
        if minimises_stack_losses and not resolved.trains_own_network and not resolved.losses and unwritten:
            self.problem(
                "stack.losses",
                f"is empty, but trainer {trainer.type!r} minimises the stack's losses: add one, e.g. [{{type: l1}}]",
            )
        check = getattr(self.built_trainer(resolved), "check_config", None)
        for keypath, message in check(resolved) if check else ():
            self.problem(keypath, message)

    def explicit(self, resolved: ResolvedConfig) -> dict[str, Any]:
        """The configuration with every parameter written out (what a run folder records)."""
        data = {key: self.config.data[key] for key in ("name", "seed", "vars") if key in self.config.data}
        if not resolved.trains_own_network:
            data["stack"] = explicit_stack(resolved)
        if resolved.datasets:
            data["data"] = {split: node.to_dict() for split, node in resolved.datasets.items()}
        if resolved.metrics:
            data["metrics"] = [node.to_dict() for node in resolved.metrics]
        if resolved.trainer:
            data["train"] = resolved.trainer.to_dict()
        return data

    # ------------------------------------------------------------------ nodes

    def node_list(self, kind: str, value: Any, keypath: str) -> list[ResolvedNode]:
        if value is None:
            return []
        if not isinstance(value, list):
            self.problem(keypath, f"must be a list of {kind} nodes ({{type: ...}}), got {value!r}")
            return []
        nodes = [self.node(kind, item, f"{keypath}[{i}]") for i, item in enumerate(value)]
        return [node for node in nodes if node is not None]

    def node(self, kind: str, value: Any, keypath: str, check_paths: bool = True) -> ResolvedNode | None:
        """Check one ``{type: name[.preset], ...}`` node against its record and factory signature."""
        choices = ", ".join(self.manager.components(kind)) or "none installed"
        if not isinstance(value, Mapping):
            self.problem(
                keypath, f"must be a mapping like {{type: <{kind}>}}, got {value!r} ({kind} choices: {choices})"
            )
            return None
        type_name = value.get("type")
        if not isinstance(type_name, str) or not type_name:
            self.problem(f"{keypath}.type", f"missing: name a {kind} (choices: {choices})")
            return None
        try:
            component, preset, preset_params = self.manager.resolve(kind, type_name)
            signature = read_signature(component.load_factory())
        except DeblurstackError as error:
            self.problem(f"{keypath}.type", str(error))
            return None
        record, name = component.record, component.name
        shadowed = shadowed_parameters(kind, signature.parameters)
        if shadowed:
            self.problem(
                f"{keypath}.type",
                f"{kind} {name!r} (plugin {component.plugin!r}, {component.distribution}): {shadowed}",
            )
            return None
        option_names = [name for name, option in OPTIONS.items() if kind in option.kinds]
        options = {key: value[key] for key in option_names if key in value}
        if kind == "loss":
            options.setdefault("weight", 1.0)
        self.check_options(options, keypath)
        params = {**preset_params, **{k: v for k, v in value.items() if k != "type" and k not in option_names}}
        node = ResolvedNode(
            keypath, component, preset or None, {}, options, source=self.config.source, signature=signature
        )
        builder_sets = _builder_sets(record)
        for key, given in params.items():
            parameter = signature.parameters.get(key)
            if parameter is None:
                if signature.open:
                    node.params[key] = given
                    continue
                self.problem(
                    f"{keypath}.{key}",
                    f"unknown parameter of {kind} {name!r}{did_you_mean(str(key), signature.parameters)} "
                    f"(parameters: {', '.join(p for p in signature.parameters if p not in builder_sets) or 'none'})",
                )
                continue
            checked, problem, location = parameter.check(given, check_paths)
            if problem:
                self.problem(".".join((f"{keypath}.{key}", *location)), problem)
            node.params[key] = checked
        for parameter in signature.parameters.values():
            if parameter.name in node.params or parameter.name in builder_sets:
                continue
            if parameter.required:
                self.problem(
                    f"{keypath}.{parameter.name}",
                    f"missing required parameter of {kind} {name!r}" + (f": {parameter.doc}" if parameter.doc else ""),
                )
            else:
                node.params[parameter.name] = parameter.default
        return node

    def check_options(self, options: dict[str, Any], keypath: str) -> None:
        """Check and normalise a node's reserved options in place (see :data:`OPTIONS`)."""
        for name, value in options.items():
            if value is None:
                continue
            try:
                options[name] = OPTIONS[name].check(value)
            except ValueError as error:
                self.problem(f"{keypath}.{name}", str(error))


# ---------------------------------------------------------------------- reserved options
# Keys of a component node that configure the stack, not the factory. Each check returns the
# normalised value or raises ValueError with the message shown after the key path.


def _checkpoint(spec: Any) -> dict[str, Any]:
    spec = {"path": spec} if isinstance(spec, str) else spec
    if (
        not isinstance(spec, Mapping)
        or not isinstance(spec.get("path"), str)
        or set(spec) - {"path", "key", "strict"}
        or not isinstance(spec.get("key"), (str, type(None)))
        or not isinstance(spec.get("strict", True), bool)
    ):
        raise ValueError(f"must be a file path or {{path, key, strict}}, got {spec!r}")
    if not Path(spec["path"]).is_file():
        raise ValueError(f"no such file: {spec['path']}")
    return {"path": spec["path"], "key": spec.get("key"), "strict": spec.get("strict", True)}


def _true_or_false(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {value!r}")
    return value


def _train_size(value: Any) -> dict[str, list[int]]:
    size = value.get("train_size") if isinstance(value, Mapping) else None
    size = [size, size] if isinstance(size, int) and not isinstance(size, bool) else size
    valid = isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)
    if not valid or set(value) - {"train_size"}:
        raise ValueError(f"must be {{train_size: N}} or {{train_size: [H, W]}}, got {value!r}")
    return {"train_size": size}


def _finite_number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"must be a finite number, got {value!r}")
    return float(value)


def _folder_path(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a folder path, got {value!r}")
    return value


def _predeblur(spec: Any) -> dict[str, str]:
    if (
        not isinstance(spec, Mapping)
        or set(spec) != {"config", "checkpoint"}
        or not all(isinstance(v, str) and Path(v).is_file() for v in spec.values())
    ):
        raise ValueError(f"must be {{config: <existing file>, checkpoint: <existing file>}}, got {spec!r}")
    return dict(spec)


@dataclass(frozen=True)
class Option:
    """A reserved key of component nodes: the kinds that take it, and how its value is checked."""

    kinds: tuple[str, ...]
    check: Callable[[Any], Any]


MODELS = ("backbone", "prior", "translator")
OPTIONS = {
    # weights loaded into the module: path or {path, key, strict} (a discriminator's: by the trainer owning it)
    "checkpoint": Option((*MODELS, "discriminator"), _checkpoint),
    "frozen": Option(MODELS, _true_or_false),  # no gradients (needs weights)
    "tlc": Option(("backbone",), _train_size),  # test-time local converter: {train_size: N}
    "weight": Option(("loss",), _finite_number),  # the loss term's factor
    "aux": Option(("dataset",), lambda value: value),  # mask sources by input name: checked with the data
    "cache": Option(("mask_source",), _folder_path),  # where computed maps are kept
    "predeblur": Option(("mask_source",), _predeblur),  # the source sees the images a stack deblurred
}


def shadowed_parameters(kind: str, parameters: Sequence[str] | Mapping[str, Any]) -> str | None:
    """What is wrong with factory parameters named like a reserved option of ``kind`` (a loss's ``weight``): the
    builder takes those keys from the node, so the factory would never receive their values. None if no name is."""
    shadowed = [name for name, option in OPTIONS.items() if kind in option.kinds and name in parameters]
    if not shadowed:
        return None
    return (
        f"its factory's parameter {', '.join(shadowed)} is named like a reserved option of {kind} nodes, which the "
        "builder applies itself, so it would never receive a value: the plugin must rename it"
    )


def _builder_sets(record: ComponentRecord) -> tuple[str, ...]:
    """Factory parameters the builder passes, so the YAML need not (in_channels, insertion_points)."""
    if record.kind == "backbone" and record.extra_channels:
        return ("in_channels",)
    if record.kind == "prior" and record.guidance:
        return ("insertion_points",)
    if record.kind == "dataset":
        return ("aux_sources",)
    return ()


def node_provides(node: ResolvedNode) -> tuple[str, ...]:
    """The auxiliary inputs a dataset's samples (or a synthesizer's pairs) carry: its record's ``provides``, and
    those its factory's ``provided_inputs(params)`` adds for these parameters (``synthesized``: what its
    synthesizer node makes; ``mixed``: what its components make). Should that raise (a parameter with a problem
    of its own), it adds nothing, so a needed input is still refused."""
    provided_inputs = getattr(node.record.load_factory(), "provided_inputs", None)
    try:
        added = tuple(provided_inputs(node.params)) if callable(provided_inputs) else ()
    except Exception:
        added = ()
    return tuple(dict.fromkeys((*node.record.provides, *added)))


def prior_channels(node: ResolvedNode) -> int | None:
    declared = node.record.out_channels
    value = node.params.get(declared) if isinstance(declared, str) else declared
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def unique_names(nodes: Sequence[ResolvedNode]) -> list[str]:
    """Names for nodes, one per node: the component's name, with ``_1``, ``_2`` ... on its repeats (``ssim``,
    ``ssim_1``), as the stack names its losses and the evaluation its metrics."""
    names, seen = [], {}
    for node in nodes:
        count = seen.get(node.component.name, 0)
        seen[node.component.name] = count + 1
        names.append(node.component.name if count == 0 else f"{node.component.name}_{count}")
    return names


def named_nodes(kind: str, nodes: Sequence[Mapping[str, Any] | str], keypath: str) -> dict[str, ResolvedNode]:
    """A list option of ``kind`` nodes (a trainer's losses) resolved, each located at ``keypath[i]``, by its
    :func:`unique_names` name."""
    resolved = [resolve_node(kind, as_node(node), f"{keypath}[{i}]") for i, node in enumerate(nodes)]
    return dict(zip(unique_names(resolved), resolved, strict=True))


def _plain(value: Any) -> Any:
    """YAML-safe data: tuples become lists, enums their value, other objects their text."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, enum.Enum):
        return _plain(value.value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "model_dump"):  # a pydantic model (a trainer's phase, say): its fields
        return _plain(value.model_dump())
    return str(value)


__all__ = [
    "ComponentNode",
    "ResolvedConfig",
    "ResolvedNode",
    "as_node",
    "build_stack",
    "named_nodes",
    "nested_node",
    "node_provides",
    "resolve_config",
    "resolve_node",
    "shadowed_parameters",
    "unique_names",
    "KINDS",
]
