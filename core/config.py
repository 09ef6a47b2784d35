"""Configuration files: safe YAML, base files, dotted overrides and interpolation (OmegaConf).

A file may name the files it extends under ``base`` (a path or a list, relative to the file);
bases merge first, in order, and the file's own values win. Lists are replaced, not merged.
Overrides use dotted paths (``stack.backbone.width=16``, ``stack.losses.0.weight=2``) and YAML
values; a mapping value replaces the node (``stack.losses.0={type: l1}``). ``${...}``
interpolates and ``???`` marks a value that must be given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from deblurstack.errors import ConfigError, did_you_mean

BASE_KEY = "base"
VARIANTS_KEY = "variants"
ABLATION_KEY = "ablation"  # a study's settings (seeds, test splits): read by `deblurstack ablation`, not by runs
_ABSENT = object()


@dataclass
class Config:
    """A loaded configuration: plain data plus where it came from (for error messages)."""

    data: dict[str, Any]
    source: str = "<config>"
    overrides: list[str] = field(default_factory=list)
    variants: list[str] = field(default_factory=list)  # names the file offers under ``variants``
    variant: str | None = None  # the one applied
    ablation: dict[str, Any] = field(default_factory=dict)  # the file's ``ablation`` section (seeds, splits)

    def error(self, keypath: str, message: str) -> str:
        """One located problem: ``file: key.path: message``."""
        return f"{self.source}: {keypath}: {message}" if keypath else f"{self.source}: {message}"


def load_config(path: str | Path, overrides: Sequence[str] = (), variant: str | None = None) -> Config:
    """Load ``path`` with its bases, apply a ``variant`` and ``overrides``, resolve interpolations.

    A file may define named variants, each a mapping of dotted keys to values applied like
    overrides (an ablation is a base config plus its variants)::

        variants:
          cat: {stack.priors: [{type: sam_cat}]}
          map: {stack.priors: [{type: sam_map, dropout: 0.0}]}

    A variant's run is named ``<name>-<variant>`` (``name`` as the overrides leave it). An ``ablation`` section
    (``seeds``, ``splits``: what ``deblurstack ablation`` runs) is set aside in ``Config.ablation`` like the
    variants: it is no part of any run's config.

    Raises:
        ConfigError: syntax errors (with line numbers), missing or cyclic bases, bad overrides or
            variants, unresolved ``${...}`` and missing ``???`` values, each located.
    """
    path = Path(path)
    merged = _load_with_bases(path, chain=())
    variants = _pop_variants(merged, path)
    ablation = _pop_ablation(merged, path)
    if variant is not None:
        if variant not in variants:
            known = ", ".join(variants) or "none"
            raise ConfigError(
                f"{path}: {VARIANTS_KEY}: no variant {variant!r}{did_you_mean(variant, variants)} (variants: {known})"
            )
        for key, value in variants[variant].items():
            _set(merged, key, value, f"{VARIANTS_KEY}.{variant}.{key}", path)
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r}: expected key.path=value")
        try:
            # from_dotlist parses the value with OmegaConf's safe YAML loader, which reads 1e-3 as a float;
            # the value stays unresolved so that ${...} refers to the whole configuration.
            parsed = OmegaConf.to_container(OmegaConf.from_dotlist([f"value={value}"]), resolve=False)["value"]
        except (yaml.YAMLError, OmegaConfBaseException) as error:
            problem = getattr(error, "problem", None)  # a YAML error's own words, not its context's
            raise ConfigError(
                f"override {override!r}: " + (f"invalid YAML value: {problem}" if problem else _first_line(error))
            ) from None
        _set(merged, key.strip(), parsed, f"override {override!r}", path)
    if variant is not None:  # after the overrides: a study renamed per seed still names each variant's run
        merged["name"] = f"{merged.get('name') or path.stem}-{variant}"
    source = str(path)
    try:
        missing = sorted(OmegaConf.missing_keys(merged))
        if missing:
            raise ConfigError([f"{source}: {key}: missing required value (???)" for key in missing])
        data = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or "?"
        raise ConfigError(f"{source}: {key}: {_first_line(error)}") from None
    return Config(
        data=data, source=source, overrides=list(overrides), variants=list(variants), variant=variant, ablation=ablation
    )


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Wrap an in-memory configuration (no bases, no interpolation)."""
    return Config(data=dict(data), source=source)


def _load_with_bases(path: Path, chain: tuple[Path, ...]) -> DictConfig:
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join(str(p) for p in (*chain, resolved))
        raise ConfigError(f"{chain[-1]}: {BASE_KEY}: cyclic base files: {cycle}")
    where = f"{chain[-1]}: {BASE_KEY}: " if chain else ""
    if not path.exists():
        raise ConfigError(f"{where}config file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"{where}{path}: not a file")
    try:
        loaded = OmegaConf.load(path)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or _first_line(error)
        raise ConfigError(f"{path}{line}: invalid YAML: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    except (OSError, OmegaConfBaseException) as error:
        raise ConfigError(f"{path}: {_first_line(error)}") from None
    if isinstance(loaded, ListConfig) or not isinstance(loaded, DictConfig):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (stack, data, ...)")
    if BASE_KEY not in loaded:
        return loaded
    bases = OmegaConf.to_container(loaded, resolve=False)[BASE_KEY]  # base paths are literal, never interpolated
    del loaded[BASE_KEY]
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not bases or not all(isinstance(b, str) and b != "???" for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY}: must be a file path or a list of file paths")
    parents = [_load_with_bases(path.parent / base, (*chain, resolved)) for base in bases]
    try:
        return OmegaConf.merge(*parents, loaded)
    except (OmegaConfBaseException, TypeError, ValueError) as error:
        key = getattr(error, "full_key", "")
        where = f"{key}: " if key else ""
        raise ConfigError(
            f"{path}: {where}does not merge with its base ({', '.join(bases)}): {_first_line(error)}"
        ) from None


def _pop_variants(config: DictConfig, path: Path) -> dict[str, dict[str, Any]]:
    """Remove the ``variants`` section and return it as name -> {dotted key: value}."""
    if VARIANTS_KEY not in config:
        return {}
    variants = OmegaConf.to_container(config, resolve=False)[VARIANTS_KEY]
    del config[VARIANTS_KEY]
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise ConfigError(f"{path}: {VARIANTS_KEY}: must map variant names to {{dotted.key: value}} mappings")
    return {str(name): {str(k): v for k, v in changes.items()} for name, changes in variants.items()}


def _pop_ablation(config: DictConfig, path: Path) -> dict[str, Any]:
    """Remove the ``ablation`` section (a study's seeds and test splits; no part of any run's config)."""
    if ABLATION_KEY not in config:
        return {}
    section = OmegaConf.to_container(config, resolve=False)[ABLATION_KEY]
    del config[ABLATION_KEY]
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: {ABLATION_KEY}: must be a mapping, e.g. {{seeds: 3, splits: [test]}}")
    return section


def _set(config: DictConfig, key: str, value: Any, label: str, path: Path) -> None:
    """Set a dotted ``key`` (as an override does): parents must exist; a mapping replaces the node."""
    parts = key.split(".")
    for end in range(1, len(parts)):  # every parent must exist; the last key may be new (a default parameter)
        parent = ".".join(parts[:end])
        if OmegaConf.select(config, parent, default=_ABSENT, throw_on_missing=False) is _ABSENT:
            raise ConfigError(f"{label}: {parent!r} does not exist in {path}")
    try:
        # a mapping replaces the node (swapping a component), it does not merge into it
        OmegaConf.update(config, key, value, merge=not isinstance(value, dict), force_add=True)
    except (OmegaConfBaseException, ValueError, IndexError, TypeError, KeyError) as error:
        raise ConfigError(f"{label}: {_first_line(error)}") from None


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


__all__ = [
    "Config",
    "config_from_dict",
    "load_config",
]
