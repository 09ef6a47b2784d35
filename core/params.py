"""A component's parameters, read from its factory's signature, type hints and docstring.

The signature is the schema: YAML keys must be parameter names, values must match the type
hints (checked by pydantic in strict mode, so ``"16"`` is not an int and ``1`` is not a bool;
YAML lists are accepted for tuples), and parameters without a default are required.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EMPTY = inspect.Parameter.empty


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
        if self.annotation is EMPTY:
            return "any"
        if isinstance(self.annotation, type):
            return self.annotation.__name__
        return str(self.annotation).replace("typing.", "")

    def check(self, value: Any) -> tuple[Any, str | None]:
        """``(validated value, None)`` or ``(value, problem)``."""
        try:
            adapter = _adapter(self.annotation)
        except TypeError:  # an unhashable annotation: not checked
            adapter = None
        if adapter is None:
            return value, None
        from pydantic import ValidationError

        try:
            return adapter.validate_python(value, strict=True), None
        except ValidationError as error:
            first = error.errors()[0]
        try:  # YAML has no tuples: accept a list where the hint says tuple
            return adapter.validate_python(_tuples(value), strict=True), None
        except ValidationError:
            pass
        message = first["msg"][0].lower() + first["msg"][1:]
        where = "".join(f"[{part}]" for part in first["loc"])
        if where:
            message += f" at {where}"
        return value, f"{message} (expected {self.type_text}, got {value!r})"


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
    docs = _parameter_docs(factory)
    parameters, is_open = {}, False
    for name, param in inspect.signature(factory).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            is_open = True
        elif param.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            parameters[name] = Parameter(name, hints.get(name, EMPTY), param.default, docs.get(name, ""))
    return Signature(parameters, is_open)


def _is_library_catch_all(function: Callable[..., Any]) -> bool:
    return function is object.__init__ or getattr(function, "__module__", "").startswith("torch.")


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """Resolved hints; one that cannot be resolved (a TYPE_CHECKING-only name) is left out alone."""
    try:
        return typing.get_type_hints(function)
    except Exception:
        pass
    hints = {}
    for name, annotation in getattr(function, "__annotations__", {}).items():
        probe = type("Probe", (), {"__annotations__": {name: annotation}, "__module__": function.__module__})
        try:
            hints.update(typing.get_type_hints(probe, globalns=getattr(function, "__globals__", None)))
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

    try:
        return TypeAdapter(annotation, config=ConfigDict(arbitrary_types_allowed=True))
    except Exception:  # a type pydantic cannot describe is not checked
        return None


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value
