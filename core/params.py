"""A component's parameters, read from its factory's signature, type hints and docstring.

The signature is the schema: YAML keys must be parameter names, values must match the type
hints (checked by pydantic in strict mode, so ``"16"`` is not an int and ``1`` is not a bool;
YAML lists are accepted for tuples), and parameters without a default are required.

Value constraints are declared once, in the hints, and ``deblurstack config check`` enforces them for every
component, third-party ones included::

    from typing import Annotated, Literal
    from pydantic import Field
    from deblurstack.params import ExistingFolder, SplitName

    def my_backbone(width: Annotated[int, Field(ge=1, le=1024)] = 32,
                    act: Literal["relu", "gelu"] = "relu",
                    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-3,
                    data: ExistingFolder = "data",          # a folder that must exist
                    known_split: SplitName = "known"): ...  # must name a data split of the config

:data:`SplitName` and :data:`MetricName` are cross-references, checked against the config's ``data``
splits and ``metrics`` columns.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, ValidationInfo
from typing_extensions import is_typeddict

EMPTY = inspect.Parameter.empty


@dataclass(frozen=True)
class Reference:
    """Hint metadata: the value names a data split (``"split"``) or a metric column (``"metric"``) of the config."""

    to: str


def _existing(kind: str) -> Callable[[str, ValidationInfo], str]:
    def check(path: str, info: ValidationInfo) -> str:
        if (info.context or {}).get("paths", True):  # a data split the command does not read is not looked at
            exists = Path(path).is_dir() if kind == "folder" else Path(path).is_file()
            if not exists:
                raise ValueError(f"no such {kind}: {path}")
        return path

    return check


#: a data split of the same config (``val``, ``test``, ...)
SplitName = Annotated[str, Reference("split")]
#: a metric column of the same config (``psnr``, ``ssim_1``, ``mcr_rate`` ...)
MetricName = Annotated[str, Reference("metric")]
#: a path to a folder that exists when the config is checked
ExistingFolder = Annotated[str, AfterValidator(_existing("folder"))]
#: a path to a file that exists when the config is checked
ExistingFile = Annotated[str, AfterValidator(_existing("file"))]


def type_text(annotation: Any) -> str:
    """A hint as users read it: ``int >= 1``, ``float in (0, 1]``, ``str (a split of this config)``, ``int | None``."""
    if typing.get_origin(annotation) is Annotated:
        text, bounds, notes = type_text(annotation.__origin__), {}, []
        for meta in annotation.__metadata__:
            for item in [meta, *getattr(meta, "metadata", ())]:  # pydantic's Field keeps its bounds in .metadata
                bounds.update(
                    {k: getattr(item, k) for k in ("ge", "gt", "le", "lt") if getattr(item, k, None) is not None}
                )
                if getattr(item, "allow_inf_nan", None) is False:
                    notes.append("finite")
            if isinstance(meta, Reference):
                notes.append(f"a {meta.to} of this config")
            if getattr(getattr(meta, "func", None), "__qualname__", "").startswith("_existing"):
                notes.append("must exist")
        low = ("[", bounds["ge"]) if "ge" in bounds else ("(", bounds["gt"]) if "gt" in bounds else None
        high = (bounds["le"], "]") if "le" in bounds else (bounds["lt"], ")") if "lt" in bounds else None
        if low and high:
            text += f" in {low[0]}{low[1]}, {high[0]}{high[1]}"
        elif low:
            text += f" {'>=' if low[0] == '[' else '>'} {low[1]}"
        elif high:
            text += f" {'<=' if high[1] == ']' else '<'} {high[0]}"
        return text + (f" ({', '.join(notes)})" if notes else "")
    if isinstance(annotation, type):
        return annotation.__name__
    arguments = typing.get_args(annotation)
    if arguments and (typing.get_origin(annotation) in (typing.Union, types.UnionType)):
        return " | ".join("None" if a is type(None) else type_text(a) for a in arguments)
    if arguments and typing.get_origin(annotation) in (tuple, list):
        name = typing.get_origin(annotation).__name__
        return f"{name}[{', '.join('...' if a is Ellipsis else type_text(a) for a in arguments)}]"
    return str(annotation).replace("typing.", "")


def references(annotation: Any) -> list[Reference]:
    """The :class:`Reference` markers in a hint, also inside ``X | None``, lists and tuples."""
    found = [m for m in getattr(annotation, "__metadata__", ()) if isinstance(m, Reference)]
    return found + [r for arg in typing.get_args(annotation) for r in references(arg)]


@dataclass(frozen=True)
class Parameter:
    """One keyword parameter of a factory."""

    name: str
    annotation: Any = EMPTY
    default: Any = EMPTY
    doc: str = ""

    @property
    def required(self) -> bool:
        return self.default is EMPTY

    @property
    def type_text(self) -> str:
        return "any" if self.annotation is EMPTY else type_text(self.annotation)

    def check(self, value: Any, check_paths: bool = True) -> tuple[Any, str | None, tuple[str, ...]]:
        """``(validated value, None, ())`` or ``(value, problem, location)``; ``check_paths=False`` skips existence
        checks. ``location`` is the key path of the bad item inside ``value`` (``("1", "lr")`` for the ``lr`` of a
        list's second mapping), empty when the problem is the value as a whole."""
        try:
            adapter = _adapter(self.annotation)
        except TypeError:  # an unhashable annotation: not checked
            adapter = None
        if adapter is None:
            return value, None, ()
        from pydantic import ValidationError

        context = {"paths": check_paths}
        try:
            return adapter.validate_python(value, strict=True, context=context), None, ()
        except ValidationError as error:
            first = error.errors()[0]
        # YAML has no tuples: accept lists where the hint says tuple; the hint-guided reading first, then every list
        # as a tuple (for what the guide cannot follow: a union's other member, a generic alias)
        hinted, tupled = _tuples(self.annotation, value), _all_tuples(value)
        candidates = [hinted] if hinted != value else []  # (a tuple never equals a list)
        for candidate in candidates + ([tupled] if tupled not in (value, hinted) else []):
            try:
                return adapter.validate_python(candidate, strict=True, context=context), None, ()
            except ValidationError as error:  # the hinted reading's problem says more
                if candidate is hinted:
                    first = error.errors()[0]
        named_key = first["type"] in ("missing", "extra_forbidden")  # the key itself is the problem
        location, item = _location(value, first["loc"], named_key)
        if first["type"] == "value_error":  # a validator's own words (no such folder: ...) say it all
            return value, str(first["ctx"]["error"]), location
        message = first["msg"][0].lower() + first["msg"][1:]
        if location:  # the item's own key path says where; the whole value would bury it
            return value, message if named_key else f"{message} (got {item!r})", location
        return value, f"{message} (expected {self.type_text}, got {value!r})", location


def _location(value: Any, loc: tuple[Any, ...], names_a_key: bool) -> tuple[tuple[str, ...], Any]:
    """The parts of a pydantic error location that index into ``value`` (not the names of union members it
    tried), as key path parts, and the item they lead to. ``names_a_key``: the last part is a key that is
    missing or not allowed."""
    parts, item = [], value
    for index, part in enumerate(loc):
        if isinstance(item, (list, tuple)) and isinstance(part, int) and 0 <= part < len(item):
            parts.append(str(part))
            item = item[part]
        elif isinstance(item, dict) and part in item:
            parts.append(str(part))
            item = item[part]
        elif names_a_key and index == len(loc) - 1 and isinstance(item, dict):
            parts.append(str(part))
            item = None
    return tuple(parts), item


@dataclass(frozen=True)
class Signature:
    """The keyword parameters of a factory; ``open`` when it also takes ``**kwargs``."""

    parameters: dict[str, Parameter]
    open: bool = False


def read_signature(factory: Callable[..., Any]) -> Signature:
    """Parameters of ``factory`` (a class or a function) with resolved hints and docstring text."""
    target = factory.__init__ if inspect.isclass(factory) else factory
    if _is_library_catch_all(target):  # e.g. a module without its own __init__: nn.Module(*args, **kwargs)
        return Signature({})
    hints = _type_hints(target)
    if dataclasses.is_dataclass(factory):  # inherited fields' hints resolve in the module of the class defining them
        hints.update(_type_hints(factory))
    docs = _parameter_docs(factory)
    # a dataclass field's default_factory shows as the placeholder "<factory>" in the signature: call it instead
    made = {
        f.name: f.default_factory
        for f in (dataclasses.fields(factory) if dataclasses.is_dataclass(factory) else ())
        if f.default_factory is not dataclasses.MISSING
    }
    parameters, is_open = {}, False
    for name, param in inspect.signature(factory).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            is_open = True
        elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            default = made[name]() if name in made else param.default
            parameters[name] = Parameter(name, hints.get(name, EMPTY), default, docs.get(name, ""))
    return Signature(parameters, is_open)


def _is_library_catch_all(function: Callable[..., Any]) -> bool:
    return function is object.__init__ or getattr(function, "__module__", "").startswith("torch.")


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """Resolved hints; one that cannot be resolved (a TYPE_CHECKING-only name) is left out alone."""
    try:
        return typing.get_type_hints(function, include_extras=True)  # keep Annotated constraints
    except Exception:
        pass
    hints = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        probe = type("Probe", (), {"__annotations__": {name: annotation}, "__module__": function.__module__})
        try:
            hints.update(typing.get_type_hints(probe, getattr(function, "__globals__", None), include_extras=True))
        except Exception:
            continue
    return hints


def _parameter_docs(factory: Callable[..., Any]) -> dict[str, str]:
    import docstring_parser

    docs: dict[str, str] = {}
    # a class inherits the parameter docs of its bases (dataset layouts share PairedImageDataset's)
    classes = [c for c in inspect.getmro(factory) if c.__module__ != "builtins"] if inspect.isclass(factory) else []
    sources = [s for c in classes for s in (c, c.__init__)] if classes else [factory]
    for source in sources:
        text = inspect.getdoc(source) if source.__doc__ else None
        if text:
            for param in docstring_parser.parse(text).params:
                docs.setdefault(param.arg_name, " ".join((param.description or "").split()))
    return docs


@functools.cache
def _adapter(annotation: Any) -> Any:
    if annotation is EMPTY or annotation is Any:
        return None
    from pydantic import ConfigDict, TypeAdapter

    try:  # a TypedDict brings its own config (pydantic refuses another)
        return TypeAdapter(
            annotation, config=None if is_typeddict(annotation) else ConfigDict(arbitrary_types_allowed=True)
        )
    except Exception:  # a type pydantic cannot describe is not checked
        return None


def _tuples(hint: Any, value: Any) -> Any:
    """``value`` with YAML's lists made tuples where ``hint`` asks for a tuple, also inside lists, mappings,
    TypedDicts, ``Annotated`` and unions; the lists it wants as lists stay lists."""
    origin, arguments = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated or (origin is not None and getattr(origin, "_name", "") in ("Required", "NotRequired")):
        return _tuples(arguments[0], value)
    if origin in (typing.Union, types.UnionType):  # the first member that reads the value otherwise
        return next((c for c in (_tuples(member, value) for member in arguments) if c != value), value)
    if isinstance(value, list):
        if hint is tuple or origin is tuple:
            variadic = len(arguments) == 2 and arguments[1] is Ellipsis
            items = [arguments[0]] * len(value) if variadic else list(arguments) or [Any] * len(value)
            return tuple(_tuples(h, v) for h, v in zip(items, value, strict=False)) + tuple(value[len(items) :])
        if origin in (list, collections.abc.Sequence) and arguments:
            return [_tuples(arguments[0], item) for item in value]
    if isinstance(value, dict):
        fields = _field_hints(hint)
        if fields is not None:
            return {key: _tuples(fields.get(key, Any), item) for key, item in value.items()}
        if origin in (dict, collections.abc.Mapping) and len(arguments) == 2:
            return {key: _tuples(arguments[1], item) for key, item in value.items()}
    return value


def _all_tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_all_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _all_tuples(v) for k, v in value.items()}
    return value


def _field_hints(hint: Any) -> dict[str, Any] | None:
    """The fields' hints of a TypedDict, dataclass or pydantic model (what a YAML mapping is validated as)."""
    if not isinstance(hint, type):
        return None
    if is_typeddict(hint) or dataclasses.is_dataclass(hint):
        return typing.get_type_hints(hint, include_extras=True)
    model_fields = getattr(hint, "model_fields", None)  # a pydantic model
    if isinstance(model_fields, dict):
        return {name: field.rebuild_annotation() for name, field in model_fields.items()}
    return None


__all__ = [
    "ExistingFile",
    "ExistingFolder",
    "MetricName",
    "Parameter",
    "Reference",
    "Signature",
    "SplitName",
    "read_signature",
    "references",
]
