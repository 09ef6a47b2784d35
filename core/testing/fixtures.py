"""deblurstack's pytest fixtures (the ``pytest11`` entry point loads this module into every pytest session)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

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


__all__ = ["builtin_plugin_manager", "plugin_manager", "register_plugin"]
