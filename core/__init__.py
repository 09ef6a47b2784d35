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
from typing import Any

from deblurstack.errors import (
    CheckpointError,
    ConfigError,
    DeblurstackError,
    PluginError,
    PluginWarning,
    TrainingError,
)
from deblurstack.markers import hookimpl, hookspec
from deblurstack.records import (
    KINDS,
    BackboneRecord,
    ComponentRecord,
    DatasetRecord,
    LossRecord,
    MaskSourceRecord,
    MetricRecord,
    PriorRecord,
    SynthesizerRecord,
    TrainerRecord,
    TranslatorRecord,
)

__version__ = "0.1.0"

#: public names that import torch, resolved on first access
_LAZY = {
    "Backbone": "deblurstack.contracts",
    "Prior": "deblurstack.contracts",
    "PriorOutput": "deblurstack.contracts",
    "Translator": "deblurstack.contracts",
    "Loss": "deblurstack.contracts",
    "Metric": "deblurstack.contracts",
    "MaskSource": "deblurstack.contracts",
    "Synthesizer": "deblurstack.contracts",
    "Stochastic": "deblurstack.contracts",
    "Guidance": "deblurstack.contracts",
    "pad_to_multiple": "deblurstack.contracts",
    "image_residual": "deblurstack.contracts",
    "Stack": "deblurstack.stack",
    "StackOutput": "deblurstack.stack",
    "build_stack": "deblurstack.compose",
    "resolve_config": "deblurstack.compose",
    "load_config": "deblurstack.config",
    "load_weights": "deblurstack.checkpoint",
    "save_atomic": "deblurstack.checkpoint",
    "get_plugin_manager": "deblurstack.registry",
    "RunState": "deblurstack.run",
    "Sample": "deblurstack.run",
}


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
    "LossRecord",
    "MaskSourceRecord",
    "MetricRecord",
    "PluginError",
    "PluginWarning",
    "TrainingError",
    "PriorRecord",
    "SynthesizerRecord",
    "TrainerRecord",
    "TranslatorRecord",
    "hookimpl",
    "hookspec",
    *_LAZY,
]
