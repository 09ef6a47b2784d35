"""The testing kit for plugin authors: conformance checks, and pytest fixtures.

The checks need no pytest (they raise ``AssertionError``). The fixtures live in
``deblurstack.testing.fixtures``, registered under the ``pytest11`` entry point, so any pytest
session in an environment with deblurstack has them (pytest itself is not a dependency:
``pip install pytest``).

Fixtures:
    plugin_manager: a fresh manager with deblurstack's hook specs and no plugin loaded, installed
        as the process-wide manager for the duration of the test.
    builtin_plugin_manager: the same, with deblurstack's own built-in plugins registered.
    register_plugin: ``register_plugin(obj, name=None)`` registers a plugin object into the
        current manager until the test ends.

Conformance checks (``from deblurstack.testing import check_component``) build a component
from the registry and assert the contract of its kind: odd input sizes, the padding multiple,
extra channels, guidance points, finite gradients, determinism under a seed and a state_dict
round trip. A typical test of a third-party plugin::

    def test_my_prior(builtin_plugin_manager, register_plugin):
        register_plugin(my_plugin_module)
        check_component("prior", "my_prior", {"strength": 2})
"""

from __future__ import annotations

import importlib
from typing import Any

_CHECKS = (
    "check_backbone",
    "check_component",
    "check_dataset",
    "check_discriminator",
    "check_loss",
    "check_mask_source",
    "check_metric",
    "check_prior",
    "check_synthesizer",
    "check_trainer",
    "check_translator",
    "make_aux",
)


def __getattr__(name: str) -> Any:
    # the checks import torch; loading them lazily keeps this pytest plugin cheap for every test session
    if name in _CHECKS:
        return getattr(importlib.import_module("deblurstack.testing.conformance"), name)
    raise AttributeError(f"module 'deblurstack.testing' has no attribute {name!r}")


__all__ = list(_CHECKS)
