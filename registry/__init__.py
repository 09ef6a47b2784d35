"""Plugin discovery and component lookup.

>>> from deblurstack.registry import get_plugin_manager
>>> get_plugin_manager().get("backbone", "unet").record.summary  # doctest: +SKIP
"""

from deblurstack.registry.manager import (
    BLOCK_ENV,
    ENTRY_POINT_GROUP,
    STRICT_ENV,
    Component,
    PluginFailure,
    PluginInfo,
    PluginManager,
    create_plugin_manager,
    get_plugin_manager,
    set_plugin_manager,
)

__all__ = [
    "BLOCK_ENV",
    "ENTRY_POINT_GROUP",
    "STRICT_ENV",
    "Component",
    "PluginFailure",
    "PluginInfo",
    "PluginManager",
    "create_plugin_manager",
    "get_plugin_manager",
    "set_plugin_manager",
]
