"""The ``deblurstack`` command line (argparse).

Usage and configuration errors print one line per problem on stderr and exit with status 2;
``--debug`` shows the traceback instead. Listing commands import no model code (and no torch).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import shlex
import sys
import traceback
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from deblurstack.engine.commands import COMMANDS, is_override
from deblurstack.errors import ConfigError, DeblurstackError, PluginError, PluginWarning, did_you_mean
from deblurstack.records import KINDS

USAGE_ERROR = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line instead of usage + error
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks")
    common.add_argument(
        "--block",
        action="append",
        metavar="PLUGIN",
        default=argparse.SUPPRESS,
        help="do not load this plugin (repeatable; also DEBLURSTACK_BLOCK_PLUGINS=a,b)",
    )

    parser = _Parser(prog="deblurstack", description="Compose deblurring stacks from plugins.", parents=[common])
    groups = parser.add_subparsers(dest="group", metavar="COMMAND", required=True, parser_class=_Parser)

    plugins = groups.add_parser("plugins", help="installed plugins").add_subparsers(
        dest="command", metavar="ACTION", required=True
    )
    plugins_listing = plugins.add_parser(
        "list", parents=[common], help="plugins with distribution, version, hooks and components"
    )

    components = groups.add_parser("components", help="registered components").add_subparsers(
        dest="command", metavar="ACTION", required=True
    )
    listing = components.add_parser("list", parents=[common], help="components, optionally filtered")
    listing.add_argument("pattern", nargs="?", help="shell-style pattern on names and name.preset, e.g. 'u*'")
    listing.add_argument("--kind", choices=list(KINDS), help="only this kind")
    show = components.add_parser("show", parents=[common], help="parameters, presets and capabilities of a component")
    show.add_argument("name", help="component name, or name.preset")
    show.add_argument("--kind", choices=list(KINDS), help="when the name exists in several kinds")

    config = groups.add_parser("config", help="configuration files").add_subparsers(
        dest="command", metavar="ACTION", required=True
    )
    check = config.add_parser(
        "check",
        parents=[common],
        help="print the resolved config (the stack is built once, on the meta device), or its errors",
    )
    check.add_argument("file", help="YAML config file")
    check.add_argument("overrides", nargs="*", help="dotted overrides, e.g. stack.backbone.width=16")
    check.add_argument("--variant", help="apply one of the file's variants first")
    plugins_listing.set_defaults(handler=plugins_list)
    listing.set_defaults(handler=components_list)
    show.set_defaults(handler=components_show)
    check.set_defaults(handler=config_check)
    for name, (summary, adapter) in COMMANDS.items():  # each engine command declares its own arguments
        command = groups.add_parser(name, parents=[common], help=summary)
        command.set_defaults(handler=adapter(command))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and isinstance(getattr(args, "overrides", None), list) and all(is_override(a) for a in extra):
        args.overrides += extra  # overrides after options (`train c.yaml --variant v a.b=1`): argparse leaves them
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.command_line = shlex.join(["deblurstack", *argv])  # what run folders record
    debug = getattr(args, "debug", False)
    previous_showwarning = warnings.showwarning
    warnings.showwarning = _show_plugin_warning(previous_showwarning)
    try:
        if getattr(args, "block", None):
            from deblurstack.registry import ENTRY_POINT_GROUP, create_plugin_manager, set_plugin_manager

            installed = sorted({entry.name for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)})
            for name in args.block:  # a misspelt name would block nothing, silently
                if name not in installed:
                    raise ConfigError(
                        f"--block {name}: no installed plugin of that name{did_you_mean(name, installed)} "
                        f"(plugins: {', '.join(installed)})"
                    )
            set_plugin_manager(create_plugin_manager(blocked=args.block))
        return args.handler(args) or 0
    except DeblurstackError as error:
        if debug:
            raise
        problems = getattr(error, "problems", None) or [str(error)]
        for problem in problems:
            print(f"deblurstack: error: {problem}", file=sys.stderr)
        return error.exit_code
    finally:
        warnings.showwarning = previous_showwarning


def run() -> NoReturn:
    """The ``deblurstack`` command and ``python -m deblurstack`` (what torchrun launches): :func:`main`, then exit.

    A torchrun worker (``WORLD_SIZE`` > 1) leaves with ``os._exit`` once its output is flushed, skipping the
    interpreter's finalization: there, gloo's threads (left after the process group is destroyed) could abort a
    rank that had finished well ("terminate called without an active exception"). So that an error still
    reads as one, an exception that escapes :func:`main` (``--debug``, a bug) is printed with its traceback and
    exits with status 1, as Python would.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise SystemExit(main())
    try:
        code = main()
    except SystemExit as stop:  # argparse's usage errors and --help
        if stop.code is not None and not isinstance(stop.code, int):
            print(stop.code, file=sys.stderr)
        code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _show_plugin_warning(fallback: Any) -> Any:
    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        if issubclass(category, PluginWarning):
            print(f"deblurstack: warning: {message}", file=sys.stderr)
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


# ---------------------------------------------------------------------- commands


def plugins_list(args: argparse.Namespace) -> None:
    from deblurstack.registry import get_plugin_manager

    manager = get_plugin_manager()
    rows = [
        (
            info.name,
            info.distribution,
            ", ".join(h.removeprefix("deblurstack_") for h in info.hooks),
            ", ".join(info.components) or "-",
        )
        for info in manager.plugin_infos()
    ]
    _table(("PLUGIN", "DISTRIBUTION", "HOOKS", "COMPONENTS"), rows)
    for failure in manager.failures:
        print(f"skipped: {failure}")


def components_list(args: argparse.Namespace) -> None:
    from deblurstack.registry import get_plugin_manager

    found = get_plugin_manager().find(args.pattern, args.kind)
    if not found:
        raise DeblurstackError(
            f"no component matches {args.pattern or '*'!r}" + (f" among {args.kind}s" if args.kind else "")
        )
    rows = [
        (c.kind, c.name, ", ".join(c.record.presets) or "-", f"{c.plugin} ({c.distribution})", c.record.summary)
        for c in found
    ]
    _table(("KIND", "NAME", "PRESETS", "PLUGIN", "SUMMARY"), rows)


def components_show(args: argparse.Namespace) -> None:
    from deblurstack.registry import get_plugin_manager

    manager = get_plugin_manager()
    name = args.name.partition(".")[0]
    kinds = [args.kind] if args.kind else [k for k in KINDS if name in manager.components(k)]
    if not kinds:
        every = sorted({n for k in KINDS for n in manager.components(k)})
        raise PluginError(f"unknown component {name!r}{did_you_mean(name, every)} (see deblurstack components list)")
    cards = [model_card(*manager.resolve(kind, args.name)) for kind in kinds]
    print("\n\n".join(cards))


def config_check(args: argparse.Namespace) -> None:
    import torch
    import yaml

    from deblurstack.compose import resolve_config

    resolved = resolve_config(args.file, args.overrides, variant=args.variant)
    # what only building shows (a frozen part without weights, a checkpoint that does not fit), the stack or the
    # trainer's own network built on the meta device: shapes and structure without allocating, whatever the sizes
    with torch.device("meta"):
        resolved.build_model()
    print(yaml.safe_dump(resolved.data, sort_keys=False).rstrip())


# ---------------------------------------------------------------------- helpers


def model_card(component: Any, preset: str | None = None, chosen: dict[str, Any] | None = None) -> str:
    """A text card: summary, factory, capabilities, presets, parameters (and size for backbones).

    ``chosen`` holds the parameters of ``preset``, shown as the defaults.
    """
    from deblurstack.params import read_signature

    record, chosen = component.record, chosen or {}
    title = f"{record.name}.{preset}" if preset else record.name
    lines = [
        f"{record.kind} {title}  (plugin {component.plugin}, {component.distribution})",
        f"  {record.summary}",
        f"  factory: {record.factory if isinstance(record.factory, str) else record.factory.__qualname__}",
    ]
    if record.reference:
        lines.append(f"  reference: {record.reference}")
    if record.requires:
        lines.append(f"  requires inputs: {', '.join(record.requires)}")
    for key, value in record.capabilities().items():
        if key == "reported":
            lines += ["  reported results:"] + [f"    {setting}: {result}" for setting, result in value.items()]
        else:
            lines.append(f"  {key}: {_format_value(value)}")
    if record.presets:
        lines.append("  presets:")
        for name, params in record.presets.items():
            lines.append(
                f"    {record.name}.{name}: " + ", ".join(f"{k}={_format_value(v)}" for k, v in params.items())
            )
    factory = component.load_factory()
    signature = read_signature(factory)
    lines.append("  parameters:")
    for parameter in signature.parameters.values():
        default = (
            "required" if parameter.required else f"= {_format_value(chosen.get(parameter.name, parameter.default))}"
        )
        doc = f"  {parameter.doc}" if parameter.doc else ""
        lines.append(f"    {parameter.name}: {parameter.type_text} {default}{doc}")
    if record.kind == "backbone":
        lines += _backbone_size(factory, chosen)
    return "\n".join(lines)


def _backbone_size(factory: Any, params: dict[str, Any], size: int = 256) -> list[str]:
    """Parameters, multiply-accumulates at ``size`` x ``size`` (torch's FLOP counter: convolutions and
    matrix products; elementwise work is not counted), padding multiple and insertion points."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):  # no memory and no arithmetic: shapes only
            module = factory(**params)
            count = sum(p.numel() for p in module.parameters())
            with FlopCounterMode(display=False) as counter:
                module(torch.empty(1, params.get("in_channels", 3), size, size))
    except Exception as error:
        return [f"  size: unknown ({type(error).__name__}: {error})"]
    points = getattr(module, "insertion_points", {}) or {}
    macs = counter.get_total_flops() / 2e9
    return [
        f"  size: {count / 1e6:.2f} M parameters ({count:,}), {macs:.2f} GMACs at {size}x{size}",
        f"  pad multiple: {getattr(module, 'pad_multiple', 1)}",
        f"  built insertion points: {', '.join(f'{k} ({v} ch)' for k, v in points.items()) or 'none'}",
    ]


def _format_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    for row in (header, *rows):
        cells = [str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)]
        print("  ".join(cells).rstrip())


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
