"""Flags from the typed configuration: each command asks for the fields it uses, by name.

A field's flag takes its help line, its allowed values and its default from
the field's metadata (`core.config.setting`), so the text a user reads and the
value the code uses cannot drift apart. Values are checked when the
configuration is built (`ConfigError`, exit code 2), before any work starts.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

from core.config import flag_name


def _default_text(f: dataclasses.Field) -> str:
    if f.metadata.get("default_text"):
        return f.metadata["default_text"]
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, bool):
        return "on" if default else "off"
    if isinstance(default, tuple):
        return " ".join(str(v) for v in default)
    return str(default) if default != "" else "none"


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    names: Sequence[str] | None = None,
    title: str | None = None,
    defaults: dict[str, Any] | None = None,
) -> None:
    """One flag per named field of configuration dataclass `cls` (all its plain fields if `names` is None).

    `defaults` replaces a field's default for this command (the log proxy
    listens on 8600, not TF Serving's 8500); the help line says so.
    """
    defaults = defaults or {}
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not dataclasses.is_dataclass(hints[f.name])}
    group = parser.add_argument_group(title or (cls.__doc__ or cls.__name__).splitlines()[0].rstrip("."))
    for name in names if names is not None else list(fields):
        f, hint = fields[name], hints[name]
        shown = defaults[name] if name in defaults else _default_text(f)
        text = f"{f.metadata['help']} (default: {shown})".replace("%", "%%")  # argparse %-formats help
        common: dict[str, Any] = {"dest": f.name, "default": defaults.get(name), "help": text}
        names = [flag_name(f.name)]
        alias = f.metadata.get("tf_serving_flag")
        if alias and f"--{alias}" not in names:
            names.append(f"--{alias}")
        if hint is bool:
            group.add_argument(*names, action=argparse.BooleanOptionalAction, **common)
        elif typing.get_origin(hint) is tuple:
            group.add_argument(*names, type=int, nargs="+", metavar="N", **common)
        else:
            group.add_argument(*names, type=hint, choices=f.metadata.get("choices"), **common)


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The fields of dataclass `cls` the user gave a flag for (lists of ints become tuples)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {
        k: (tuple(v) if isinstance(v, list) else v)
        for k, v in vars(args).items()
        if v is not None and k in names
    }


def build_config(args: argparse.Namespace, cls: type, **sections: Any) -> Any:
    """`cls` with its defaults, the flags the user gave on top, and nested `sections` built already."""
    return cls(**{k: v for k, v in given(args, cls).items() if k not in sections}, **sections)


def bounded(
    kind: type = int, minimum: float | None = None, maximum: float | None = None, above: float | None = None
):
    """An argparse type: a number of `kind` within the bounds (argparse refuses others, exit code 2)."""

    def parse(text: str):
        try:
            number = kind(text)
        except ValueError:
            expected = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if minimum is not None and number < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {number}")
        if maximum is not None and number > maximum:
            raise argparse.ArgumentTypeError(f"must be <= {maximum}, got {number}")
        if above is not None and not number > above:
            raise argparse.ArgumentTypeError(f"must be > {above}, got {number}")
        return number

    return parse


def at_least(minimum: int):
    """A whole number >= `minimum`."""
    return bounded(int, minimum=minimum)


positive_float = bounded(float, above=0)
port = bounded(int, minimum=0, maximum=65535)
