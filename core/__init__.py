"""deblurstack: compose deblurring stacks from plugins.

Importing the package is cheap (no torch): records, markers and errors load at once; the
torch-based API (contracts, Stack, build_stack) loads on first attribute access.

Writing a plugin::

    from deblurstack import BackboneRecord, hookimpl

    @hookimpl
    def deblurstack_backbones():
        return [BackboneRecord(name="tinynet", factory="my_pkg.tinynet:TinyNet", summary="...")]
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from deblurstack.errors import (
    CheckpointError,
    ConfigError,
    DeblurstackError,
    PluginError,
    PluginWarning,
    TrainingError,
    one_line,
)
from deblurstack.markers import hookimpl, hookspec
from deblurstack.records import (
    KINDS,
    BackboneRecord,
    ComponentRecord,
    DatasetRecord,
    DiscriminatorRecord,
    LossRecord,
    MaskSourceRecord,
    MetricRecord,
    PriorRecord,
    SynthesizerRecord,
    TrainerRecord,
    TrainingSplit,
    TranslatorRecord,
)

__version__ = "0.1.0"

#: public names that import torch, resolved on first access (the names plugins use, in one place)
_LAZY = {
    "Backbone": "deblurstack.contracts",
    "Prior": "deblurstack.contracts",
    "PriorOutput": "deblurstack.contracts",
    "Translator": "deblurstack.contracts",
    "Discriminator": "deblurstack.contracts",
    "Loss": "deblurstack.contracts",
    "Metric": "deblurstack.contracts",
    "MaskSource": "deblurstack.contracts",
    "Synthesizer": "deblurstack.contracts",
    "Stochastic": "deblurstack.contracts",
    "Guidance": "deblurstack.contracts",
    "pad_to_multiple": "deblurstack.contracts",
    "image_residual": "deblurstack.contracts",
    "inference_fast_path": "deblurstack.contracts",
    "folded_batch_norm": "deblurstack.contracts",
    "folded_conv3x3": "deblurstack.contracts",
    "Stack": "deblurstack.stack",
    "StackOutput": "deblurstack.stack",
    "build_stack": "deblurstack.compose",
    "resolve_config": "deblurstack.compose",
    "load_config": "deblurstack.config",
    "load_weights": "deblurstack.checkpoint",
    "load_state": "deblurstack.checkpoint",
    "read_state_dict": "deblurstack.checkpoint",
    "save_atomic": "deblurstack.checkpoint",
    "ImageError": "deblurstack.data",
    "Pair": "deblurstack.data",
    "PairedImageDataset": "deblurstack.data",
    "pair_by_name": "deblurstack.data",
    "read_image": "deblurstack.data",
    "read_map": "deblurstack.data",
    "write_image": "deblurstack.data",
    "to_tensor": "deblurstack.data",
    "ExistingFile": "deblurstack.params",
    "ExistingFolder": "deblurstack.params",
    "MetricName": "deblurstack.params",
    "SplitName": "deblurstack.params",
    "get_plugin_manager": "deblurstack.registry",
    "RunState": "deblurstack.run",
    "Sample": "deblurstack.run",
}

if TYPE_CHECKING:  # what type checkers and IDEs see: the real objects behind the lazy names
    from deblurstack.checkpoint import load_state, load_weights, read_state_dict, save_atomic
    from deblurstack.compose import build_stack, resolve_config
    from deblurstack.config import load_config
    from deblurstack.contracts import (
        Backbone,
        Discriminator,
        Guidance,
        Loss,
        MaskSource,
        Metric,
        Prior,
        PriorOutput,
        Stochastic,
        Synthesizer,
        Translator,
        folded_batch_norm,
        folded_conv3x3,
        image_residual,
        inference_fast_path,
        pad_to_multiple,
    )
    from deblurstack.data import (
        ImageError,
        Pair,
        PairedImageDataset,
        pair_by_name,
        read_image,
        read_map,
        to_tensor,
        write_image,
    )
    from deblurstack.params import ExistingFile, ExistingFolder, MetricName, SplitName
    from deblurstack.registry import get_plugin_manager
    from deblurstack.run import RunState, Sample
    from deblurstack.stack import Stack, StackOutput


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'deblurstack' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "KINDS",
    "BackboneRecord",
    "CheckpointError",
    "ComponentRecord",
    "ConfigError",
    "DatasetRecord",
    "DeblurstackError",
    "DiscriminatorRecord",
    "LossRecord",
    "MaskSourceRecord",
    "MetricRecord",
    "PluginError",
    "PluginWarning",
    "TrainingError",
    "PriorRecord",
    "SynthesizerRecord",
    "TrainerRecord",
    "TrainingSplit",
    "TranslatorRecord",
    "hookimpl",
    "hookspec",
    "one_line",
    *_LAZY,
]
