"""The plugin manager: entry-point discovery, component collection and lookup.

Plugins are modules named by entry points of the group ``deblurstack.plugins`` (deblurstack's
own built-ins included). Each is loaded on its own: one that fails to import, whose hook
raises or whose record is malformed is reported by name and skipped, unless
``DEBLURSTACK_STRICT_PLUGINS=1`` makes that fatal. ``DEBLURSTACK_BLOCK_PLUGINS=a,b`` blocks
plugins by name. Two components of one kind with the same name are an error that names both
distributions; pluggy's call order is never used to pick a winner.
"""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import warnings
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pluggy

from deblurstack import hookspecs
from deblurstack.errors import PluginError, PluginWarning, did_you_mean, one_line
from deblurstack.markers import PROJECT_NAME
from deblurstack.records import KINDS, ComponentRecord

ENTRY_POINT_GROUP = "deblurstack.plugins"
STRICT_ENV = "DEBLURSTACK_STRICT_PLUGINS"
BLOCK_ENV = "DEBLURSTACK_BLOCK_PLUGINS"
NOT_INSTALLED = "not installed"


@dataclass(frozen=True)
class Component:
    """A record together with the plugin and distribution that registered it."""

    record: ComponentRecord
    plugin: str
    distribution: str

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def name(self) -> str:
        return self.record.name

    def load_factory(self) -> Any:
        """The record's factory; an import failure names the plugin and its distribution."""
        try:
            return self.record.load_factory()
        except Exception as error:
            raise PluginError(
                f"{self.kind} {self.name!r} (plugin {self.plugin!r}, {self.distribution}) cannot import "
                f"its factory {self.record.factory!r}: {_describe(error)}"
            ) from error


@dataclass(frozen=True)
class PluginInfo:
    """One registered plugin, as ``deblurstack plugins list`` shows it."""

    name: str
    distribution: str
    hooks: tuple[str, ...]
    components: tuple[str, ...]


@dataclass(frozen=True)
class PluginFailure:
    """A plugin, or one of its records, that was skipped and why."""

    plugin: str
    distribution: str
    reason: str

    def __str__(self) -> str:
        return f"plugin {self.plugin!r} ({self.distribution}): {self.reason}"


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


class PluginManager(pluggy.PluginManager):
    """pluggy's manager with deblurstack's specs, tolerant loading and per-kind component tables."""

    def __init__(self, *, strict: bool | None = None) -> None:
        super().__init__(PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.strict = _env_flag(STRICT_ENV) if strict is None else strict
        self.failures: list[PluginFailure] = []
        self._distributions: dict[str, str] = {}
        self._tables: dict[str, dict[str, Component]] = {}

    # ------------------------------------------------------------------ loading

    def load_entrypoints(self, group: str = ENTRY_POINT_GROUP, *, distributions: Collection[str] | None = None) -> int:
        """Register the plugins of every installed distribution (or only of ``distributions``).

        Returns how many plugins were registered; failures are in ``self.failures``.
        """
        count = 0
        for entry_point in importlib.metadata.entry_points(group=group):
            dist = entry_point.dist
            dist_name = dist.metadata["Name"] if dist else None
            if distributions is not None and dist_name not in distributions:
                continue
            if self.is_blocked(entry_point.name):
                continue
            label = f"{dist_name} {dist.version}" if dist else NOT_INSTALLED
            if self.has_plugin(entry_point.name):
                if self._distributions.get(entry_point.name) != label:  # the same entry point seen twice is fine
                    other = self.distribution_of(entry_point.name)
                    self._report(
                        PluginFailure(
                            entry_point.name, label, f"plugin name {entry_point.name!r} is already taken by {other}"
                        )
                    )
                continue
            try:
                self.register(entry_point.load(), name=entry_point.name)
            except Exception as error:  # any import-time failure of a third-party module
                self._report(PluginFailure(entry_point.name, label, f"failed to load: {_describe(error)}"))
                continue
            self._distributions[entry_point.name] = label
            count += 1
        return count

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        """Register ``plugin``; a hook implementation without a matching spec is rejected at once."""
        registered = super().register(plugin, name)
        if registered is not None:
            try:
                self.check_pending()
            except pluggy.PluginValidationError:
                self.unregister(name=registered)
                raise
        self._tables.clear()
        return registered

    def unregister(self, plugin: Any = None, name: str | None = None) -> Any:
        name = name or self.get_name(plugin)
        removed = super().unregister(plugin, name)
        self._distributions.pop(name or "", None)
        self._tables.clear()
        return removed

    def set_blocked(self, name: str) -> None:
        super().set_blocked(name)
        self._tables.clear()

    # ------------------------------------------------------------------ components

    def components(self, kind: str) -> dict[str, Component]:
        """All components of ``kind`` by name (hooks are called once, then cached)."""
        if kind not in KINDS:
            raise PluginError(
                f"unknown component kind {kind!r}{did_you_mean(kind, KINDS)} (choose from: {', '.join(KINDS)})"
            )
        if kind not in self._tables:
            self._tables[kind] = self._collect(kind)
        return self._tables[kind]

    def get(self, kind: str, name: str) -> Component:
        """The component ``name`` of ``kind``; an unknown name raises with suggestions."""
        table = self.components(kind)
        if name in table:
            return table[name]
        # a plugin that failed to load may be the one that provides it: say so rather than only "unknown"
        failed = "".join(f"; {failure} (it may provide {name!r})" for failure in self.failures)
        if not table:
            raise PluginError(
                f"unknown {kind} {name!r}: no {kind} is registered (is the plugin that provides it installed?)" + failed
            )
        raise PluginError(
            f"unknown {kind} {name!r}{did_you_mean(name, table)} (choose from: {', '.join(table)}){failed}"
        )

    def resolve(self, kind: str, type_name: str) -> tuple[Component, str | None, dict[str, Any]]:
        """``name`` or ``name.preset`` -> the component, the preset name (or None) and its parameters."""
        name, dot, preset = type_name.partition(".")
        component = self.get(kind, name)
        if not dot:
            return component, None, {}
        presets = component.record.presets
        if preset not in presets:
            raise PluginError(
                f"unknown preset {preset!r} of {kind} {name!r}{did_you_mean(preset, presets)} "
                f"(presets: {', '.join(presets) or 'none'})"
            )
        return component, preset, dict(presets[preset])

    def find(self, pattern: str | None = None, kind: str | None = None) -> list[Component]:
        """Components whose name (or ``name.preset``) matches the shell-style ``pattern``."""
        kinds = [kind] if kind else list(KINDS)
        found = []
        for each in kinds:
            for component in self.components(each).values():
                names = [component.name, *(f"{component.name}.{p}" for p in component.record.presets)]
                if pattern is None or any(fnmatch.fnmatchcase(n, pattern) for n in names):
                    found.append(component)
        return found

    def plugin_infos(self) -> list[PluginInfo]:
        """Every registered plugin with its distribution, implemented hooks and components."""
        provided: dict[str, list[str]] = {}
        for kind in KINDS:
            for component in self.components(kind).values():
                provided.setdefault(component.plugin, []).append(f"{kind}:{component.name}")
        infos = []
        for name, plugin in sorted(self.list_name_plugin(), key=lambda item: item[0]):
            if plugin is None:  # blocked
                continue
            hooks = tuple(sorted(caller.name for caller in self.get_hookcallers(plugin) or ()))
            infos.append(PluginInfo(name, self.distribution_of(name), hooks, tuple(provided.get(name, ()))))
        return infos

    def distribution_of(self, plugin_name: str) -> str:
        """``"name version"`` of the distribution that installed a plugin, or ``"not installed"``."""
        return self._distributions.get(plugin_name, NOT_INSTALLED)

    def _collect(self, kind: str) -> dict[str, Component]:
        record_type = KINDS[kind]
        table: dict[str, Component] = {}
        # Call each implementation on its own, so that a failure or a record is attributed to its plugin.
        for impl in getattr(self.hook, record_type.hook).get_hookimpls():
            plugin, dist = impl.plugin_name, self.distribution_of(impl.plugin_name)
            try:
                returned = impl.function()
            except Exception as error:
                self._report(PluginFailure(plugin, dist, f"hook {record_type.hook} raised {_describe(error)}"))
                continue
            if isinstance(returned, (str, bytes, Mapping, record_type)) or not (
                returned is None or isinstance(returned, Iterable)
            ):
                self._report(  # one line for the plugin, not one per character or key
                    PluginFailure(
                        plugin,
                        dist,
                        f"hook {record_type.hook} must return a list of {record_type.__name__}, "
                        f"got {type(returned).__name__} {_short(returned)}",
                    )
                )
                continue
            records = list(returned or ())
            for record in records:
                problems = (
                    record.problems()
                    if isinstance(record, record_type)
                    else [f"expected a {record_type.__name__}, got {type(record).__name__}"]
                )
                if problems:
                    name = getattr(record, "name", "?")
                    self._report(
                        PluginFailure(plugin, dist, f"malformed {kind} record {name!r}: {'; '.join(problems)}")
                    )
                    continue
                if record.name in table:
                    first = table[record.name]
                    raise PluginError(
                        f"{kind} {record.name!r} is registered twice: by plugin {first.plugin!r} "
                        f"({first.distribution}) and by plugin {plugin!r} ({dist}); block one with {BLOCK_ENV}=<plugin>"
                    )
                table[record.name] = Component(record, plugin, dist)
        return dict(sorted(table.items()))

    def _report(self, failure: PluginFailure) -> None:
        if self.strict:
            raise PluginError(f"{failure} ({STRICT_ENV} is set)")
        self.failures.append(failure)
        warnings.warn(f"{failure}; skipped", PluginWarning, stacklevel=3)


def _describe(error: BaseException) -> str:
    text = one_line(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def create_plugin_manager(
    *, autoload: bool = True, blocked: Iterable[str] = (), strict: bool | None = None
) -> PluginManager:
    """A new manager: blocked plugins (argument and ``DEBLURSTACK_BLOCK_PLUGINS``), then entry points."""
    manager = PluginManager(strict=strict)
    from_env = [n.strip() for n in os.environ.get(BLOCK_ENV, "").split(",") if n.strip()]
    for name in [*from_env, *blocked]:
        manager.set_blocked(name)
    if autoload:
        manager.load_entrypoints()
    return manager


_current: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, created with entry points on first use."""
    global _current
    if _current is None:
        _current = create_plugin_manager()
    return _current


def set_plugin_manager(manager: PluginManager | None) -> PluginManager | None:
    """Replace the process-wide manager (``None`` = recreate on next use); returns the previous one."""
    global _current
    previous, _current = _current, manager
    return previous


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
