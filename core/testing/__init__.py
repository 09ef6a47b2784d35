"""pytest plugin for plugin authors (loaded automatically through the ``pytest11`` entry point).

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
from collections.abc import Callable, Iterator
from typing import Any

import pytest

_CHECKS = ("check_backbone", "check_component", "check_loss", "check_prior", "check_translator", "make_aux")


def __getattr__(name: str) -> Any:
    # the checks import torch; loading them lazily keeps this pytest plugin cheap for every test session
    if name in _CHECKS:
        return getattr(importlib.import_module("deblurstack.testing.conformance"), name)
    raise AttributeError(f"module 'deblurstack.testing' has no attribute {name!r}")


__all__ = [
    "builtin_plugin_manager",
    "check_backbone",
    "check_component",
    "check_loss",
    "check_prior",
    "check_translator",
    "make_aux",
    "plugin_manager",
    "register_plugin",
]

BUILTIN_DISTRIBUTION = "deblurstack"


@pytest.fixture
def plugin_manager() -> Iterator[Any]:
    """A fresh plugin manager without autoload, used as the process-wide one during the test."""
    from deblurstack.registry import PluginManager, set_plugin_manager

    manager = PluginManager()
    previous = set_plugin_manager(manager)
    yield manager
    set_plugin_manager(previous)


@pytest.fixture
def builtin_plugin_manager(plugin_manager: Any) -> Any:
    """A fresh manager holding only deblurstack's built-in plugins (no other installed plugin)."""
    plugin_manager.load_entrypoints(distributions={BUILTIN_DISTRIBUTION})
    return plugin_manager


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., str]]:
    """``register_plugin(obj, name=None) -> name``: register into the current manager for this test."""
    from deblurstack.registry import get_plugin_manager

    registered: list[tuple[Any, str]] = []

    def register(plugin: Any, name: str | None = None) -> str:
        manager = get_plugin_manager()  # at call time: whichever manager the test installed
        registered.append((manager, manager.register(plugin, name)))
        return registered[-1][1]

    yield register
    for manager, name in reversed(registered):
        if manager.has_plugin(name):
            manager.unregister(name=name)
