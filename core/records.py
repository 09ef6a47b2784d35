"""Component records: what a registration hook returns.

A record describes a component without importing it: its name, where its factory lives
(``"package.module:attribute"``, imported on first build), a one-line summary, named presets
and the capability fields the stack builder checks before it builds anything. This module
imports no torch, so listing components stays fast.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

#: channels of the images a stack maps (RGB)
IMAGE_CHANNELS = 3
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
PRESET_PATTERN = re.compile(r"[a-z0-9][a-z0-9_-]*")
FACTORY_PATTERN = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


@dataclass(frozen=True, kw_only=True)
class ComponentRecord:
    """Fields common to every kind of component.

    Attributes:
        name: registry name, lower case (``nafnet``); a YAML ``type`` of ``name.preset`` selects a preset.
        factory: ``"package.module:attribute"`` imported on first use, or the callable itself.
            Its signature is the component's parameter schema.
        summary: one line shown by ``deblurstack components list``.
        presets: named parameter sets, e.g. ``{"w32": {"width": 32}}`` for ``type: nafnet.w32``.
        requires: auxiliary inputs the component reads, e.g. ``("masks",)`` (priors, losses, metrics).
        reference: paper or project the component reproduces (shown by ``components show``).
    """

    kind: ClassVar[str] = "component"
    hook: ClassVar[str] = ""
    reads_inputs: ClassVar[bool] = False  # may name auxiliary inputs in ``requires``

    name: str
    factory: str | Callable[..., Any]
    summary: str
    presets: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    requires: tuple[str, ...] = ()
    reference: str = ""

    def load_factory(self) -> Callable[..., Any]:
        """Import and return the factory (raises ImportError/AttributeError as Python does)."""
        if callable(self.factory):
            return self.factory
        module_name, _, attribute = self.factory.partition(":")
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
        return target

    def capabilities(self) -> dict[str, Any]:
        """The kind-specific fields, for listings and model cards."""
        common = {f.name for f in fields(ComponentRecord)}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in common}

    def problems(self) -> list[str]:
        """What is malformed in this record (an empty list when it is fine)."""
        found = []
        if not isinstance(self.name, str) or not NAME_PATTERN.fullmatch(self.name):
            found.append(f"name {self.name!r} must match {NAME_PATTERN.pattern}")
        if not (callable(self.factory) or (isinstance(self.factory, str) and FACTORY_PATTERN.fullmatch(self.factory))):
            found.append(f"factory {self.factory!r} must be a callable or 'package.module:attribute'")
        if not isinstance(self.summary, str) or not self.summary.strip() or "\n" in self.summary:
            found.append("summary must be one non-empty line")
        if not isinstance(self.presets, Mapping):
            found.append("presets must be a mapping of preset name to parameters")
        else:
            for preset, params in self.presets.items():
                if not isinstance(preset, str) or not PRESET_PATTERN.fullmatch(preset):
                    found.append(f"preset name {preset!r} must match {PRESET_PATTERN.pattern}")
                elif not isinstance(params, Mapping):
                    found.append(f"preset {preset!r} must map parameter names to values")
        for spec in fields(self):  # the typed capability fields: flags and name lists
            value = getattr(self, spec.name)
            if spec.type == "bool" and not isinstance(value, bool):
                found.append(f"{spec.name} must be True or False, got {value!r}")
            elif spec.type == "tuple[str, ...]" and not (
                isinstance(value, tuple) and all(isinstance(v, str) for v in value)
            ):
                found.append(f"{spec.name} must be a tuple of strings, got {value!r}")
        if self.requires and not self.reads_inputs:
            found.append(f"requires is not used by a {self.kind} (only priors, losses and metrics read inputs)")
        return found

    def _int_or_parameter(self, field_name: str) -> list[str]:
        value = getattr(self, field_name)
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            return [f"{field_name} must be an int or the name of a factory parameter, got {value!r}"]
        if isinstance(value, int) and value < 0:
            return [f"{field_name} must not be negative"]
        return []


@dataclass(frozen=True, kw_only=True)
class BackboneRecord(ComponentRecord):
    """A network that maps the blurry image (plus prior channels) to a sharp image.

    Attributes:
        extra_channels: the factory takes ``in_channels`` and adds its global residual on the
            three image channels only, so priors may append channels (the builder sets ``in_channels``).
        insertion_points: names of the feature maps where guidance priors may act, e.g.
            ``decoder_s2`` for a decoder feature map at stride 2. A built module offers a subset
            (``module.insertion_points``: name -> channels), which depends on its parameters.
        multiscale: the forward returns a list of outputs, coarse to fine (MIMO-UNet).
        tlc: it pools globally (``nn.AdaptiveAvgPool2d(1)``), so the test-time local converter
            applies (YAML: ``tlc: {train_size: 256}``).
        reported: results the paper or official code reports, by preset or setting, e.g.
            ``{"w32": "GoPro 32.87 dB PSNR / 0.9606 SSIM"}`` (shown by ``components show``).
    """

    kind: ClassVar[str] = "backbone"
    hook: ClassVar[str] = "deblurstack_backbones"

    extra_channels: bool = True
    insertion_points: tuple[str, ...] = ()
    multiscale: bool = False
    tlc: bool = False
    reported: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class PriorRecord(ComponentRecord):
    """Structure derived from the blurry input: extra channels, backbone guidance, or both.

    Attributes:
        out_channels: channels the prior appends to the image; an int, or the name of the
            factory parameter that sets it (``"seg_channels"``).
        guidance: the prior acts on backbone insertion points; its factory then takes
            ``insertion_points`` (point name -> channels), which the builder passes.
        training_inputs: inputs only its auxiliary losses read (e.g. a ground-truth ``blur_mask``),
            required from training data, never at inference. ``requires`` lists what its forward reads.
    """

    kind: ClassVar[str] = "prior"
    hook: ClassVar[str] = "deblurstack_priors"
    reads_inputs: ClassVar[bool] = True

    out_channels: int | str = 0
    guidance: bool = False
    training_inputs: tuple[str, ...] = ()

    def problems(self) -> list[str]:
        return super().problems() + self._int_or_parameter("out_channels")


@dataclass(frozen=True, kw_only=True)
class TranslatorRecord(ComponentRecord):
    """Maps an image with unknown blur into the blur domain a (frozen) backbone knows (Blur2Blur).

    A translator may return a coarse-to-fine list of images; the stack feeds the last one on.
    """

    kind: ClassVar[str] = "translator"
    hook: ClassVar[str] = "deblurstack_translators"


@dataclass(frozen=True, kw_only=True)
class DiscriminatorRecord(ComponentRecord):
    """Judges whether images are real or made, for adversarial trainers (Blur2Blur's PatchGAN).

    Discriminators are a kind of their own, not a part of a trainer, so that any adversarial trainer can take
    any of them from YAML (``train.discriminator: {type: patchgan, norm: instance}``) and a package can add one.
    They are not part of the stack: the trainer owns one, saves it in its checkpoints and drops it after
    training, as inference never needs it.
    """

    kind: ClassVar[str] = "discriminator"
    hook: ClassVar[str] = "deblurstack_discriminators"


@dataclass(frozen=True, kw_only=True)
class LossRecord(ComponentRecord):
    """A training objective. The stack weights it with the YAML key ``weight``.

    Attributes:
        multiscale: the loss receives every backbone output (coarse to fine), not only the last.
    """

    kind: ClassVar[str] = "loss"
    hook: ClassVar[str] = "deblurstack_losses"
    reads_inputs: ClassVar[bool] = True

    multiscale: bool = False


@dataclass(frozen=True, kw_only=True)
class DatasetRecord(ComponentRecord):
    """A source of training or evaluation samples.

    Attributes:
        provides: auxiliary inputs every sample carries besides ``input`` and ``target``
            (e.g. ``("blur_mask",)`` for ReLoBlur).
    """

    kind: ClassVar[str] = "dataset"
    hook: ClassVar[str] = "deblurstack_datasets"

    provides: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class MetricRecord(ComponentRecord):
    """An image-quality measure. ``requires`` may name ``input`` (e.g. MCR compares with the blurry input).

    Attributes:
        higher_is_better: direction used to pick the best checkpoint.
    """

    kind: ClassVar[str] = "metric"
    hook: ClassVar[str] = "deblurstack_metrics"
    reads_inputs: ClassVar[bool] = True

    higher_is_better: bool = True


@dataclass(frozen=True, kw_only=True)
class MaskSourceRecord(ComponentRecord):
    """Computes or reads per-image auxiliary inputs (SAM label maps, classical segmentations).

    Attributes:
        provides: the auxiliary inputs it produces.
    """

    kind: ClassVar[str] = "mask_source"
    hook: ClassVar[str] = "deblurstack_mask_sources"

    provides: tuple[str, ...] = ("masks",)


@dataclass(frozen=True, kw_only=True)
class TrainerRecord(ComponentRecord):
    """A training schedule (supervised, alternating, adversarial) that drives a stack.

    Attributes:
        trains_stack_losses: the trainer minimises the stack's ``losses``, so a config needs at least one.
        trains_stack: the trainer trains a deblurring stack; ``False``: a network of its own (a blur model such as
            KernelWizard), which the built trainer's ``build_model() -> nn.Module`` makes, and the config has no
            ``stack`` section. The loop then saves, averages and validates that network instead.

    A built trainer may also define ``training_splits() -> list[TrainingSplit]`` (what it trains on) and
    ``check_config(resolved) -> list[tuple[str, str]]``: problems of the whole config as ``(key path, message)``
    pairs (a translator it needs, sizes its networks need), which ``config check`` reports as its own.
    """

    kind: ClassVar[str] = "trainer"
    hook: ClassVar[str] = "deblurstack_trainers"

    trains_stack_losses: bool = True
    trains_stack: bool = True


@dataclass(frozen=True)
class TrainingSplit:
    """A data split a trainer trains on, and what it minimises there: what ``config check`` holds the data to.

    A built trainer lists them in ``training_splits()`` (default: ``data.train`` with every loss). The check
    then asks each such split for the inputs of the stack's losses (``stack_losses``) and of the priors'
    auxiliary losses (``prior_losses``, e.g. a ``blur_mask``), and that ``trains`` names parts of the stack
    that are not frozen.

    Attributes:
        split: the data split's name.
        keypath: where the trainer's config names it (for messages), e.g. ``train.phases.0.split``.
        stack_losses: the stack's ``losses`` are minimised on it.
        prior_losses: the priors' auxiliary losses are minimised on it.
        trains: the parts trained on it (``backbone``, ``priors.0``, ``translator``); ``("all",)``: every part.
        stack_forward: the whole stack runs on it, so it must give what the priors read; ``False`` when the
            trainer runs only a part (an adversarial translator trainer never runs the priors and the backbone).
        trains_keypath: where the config lists ``trains`` (``train.phases.0.trains``), for messages; unset when the
            trainer chooses the parts itself (problems are then told at the parts, ``stack.translator``).
    """

    split: str
    keypath: str
    stack_losses: bool = True
    prior_losses: bool = True
    trains: tuple[str, ...] = ("all",)
    stack_forward: bool = True
    trains_keypath: str | None = None


@dataclass(frozen=True, kw_only=True)
class SynthesizerRecord(ComponentRecord):
    """Makes blurry/sharp pairs from sharp images (``deblurstack synth``).

    Attributes:
        frames: consecutive sharp frames one pair is made from: an int (1 for single-image
            synthesizers), or the name of the factory parameter that sets it (frame averaging).
        provides: auxiliary outputs written beside the pairs, e.g. ``("blur_mask",)``.
    """

    kind: ClassVar[str] = "synthesizer"
    hook: ClassVar[str] = "deblurstack_synthesizers"

    frames: int | str = 1
    provides: tuple[str, ...] = ()

    def frame_count(self, params: Mapping[str, Any]) -> Any:
        """The frames one pair is made from, for a node with these (checked) parameters."""
        return params.get(self.frames) if isinstance(self.frames, str) else self.frames

    def problems(self) -> list[str]:
        return super().problems() + self._int_or_parameter("frames")


RECORD_TYPES: tuple[type[ComponentRecord], ...] = (
    BackboneRecord,
    PriorRecord,
    TranslatorRecord,
    LossRecord,
    DatasetRecord,
    MetricRecord,
    MaskSourceRecord,
    TrainerRecord,
    SynthesizerRecord,
    DiscriminatorRecord,
)

#: kind name -> record class, e.g. ``KINDS["backbone"] is BackboneRecord``.
KINDS: dict[str, type[ComponentRecord]] = {cls.kind: cls for cls in RECORD_TYPES}


__all__ = [
    "IMAGE_CHANNELS",
    "KINDS",
    "RECORD_TYPES",
    "BackboneRecord",
    "ComponentRecord",
    "DatasetRecord",
    "DiscriminatorRecord",
    "LossRecord",
    "MaskSourceRecord",
    "MetricRecord",
    "PriorRecord",
    "SynthesizerRecord",
    "TrainerRecord",
    "TrainingSplit",
    "TranslatorRecord",
]
