"""Settings classes as argparse flags: each field becomes `--field-name`, its description the help.

`worldenv.config.argv` is the way back: settings -> the arguments that give them.
Flags left out fall through to environment variables (`WORLDENV_*`, `REDIS_URL`) and then to
the defaults, because only flags actually given are passed to the settings class. A field's
`json_schema_extra` may say `positional: True` (an argument, not a flag), `aliases` (more flag
spellings) or `metavar`. Invalid settings end the command with exit code 2 and one line that
names each flag and what is wrong with it, e.g. `--episodes: must be >= 1`.
"""
from __future__ import annotations

import argparse
import sys
import types
import typing

import pydantic
from pydantic_settings import BaseSettings

from worldenv import config

POSITIONAL = {"positional": True}
_BOUNDS = {"greater_than_equal": (">=", "ge"), "greater_than": (">", "gt"),
           "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}


class InvalidSettings(ValueError):
    """Settings that do not validate; the message names each flag and what is wrong."""


def _flag_type(annotation) -> tuple[type, list[str] | None]:
    """(argparse type, choices) for a field annotation: int, float, str, bool, Literal, optional."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:
        return str, [str(a) for a in typing.get_args(annotation)]
    return (annotation if annotation in (int, float, str, bool) else str), None


def _described(field) -> str:
    """The description as argparse help text: argparse formats help with %, so a literal % is doubled."""
    return (field.description or "").replace("%", "%%")


def _help(field) -> str:
    """The description and the default."""
    text = _described(field)
    if field.default_factory is not None:
        return text
    return f"{text} ({'required' if field.is_required() else f'default: {field.default}'})"


def _add(parser: argparse.ArgumentParser, name: str, field) -> None:
    extra = field.json_schema_extra or {}
    kind, choices = _flag_type(field.annotation)
    if extra.get("positional"):
        parser.add_argument(name, type=kind, choices=choices, help=_described(field))
        return
    flags = [config.flag(name), *extra.get("aliases", ())]
    if kind is bool:
        parser.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=None, help=_help(field))
        return
    parser.add_argument(*flags, dest=name, type=kind, choices=choices, default=None, metavar=extra.get("metavar"),
                        help=_help(field))


def add_settings(parser: argparse.ArgumentParser, cls: type[BaseSettings], skip: tuple[str, ...] = ()) -> None:
    """Add one flag (or positional argument) per settings field; unset flags stay None."""
    for name, field in cls.model_fields.items():
        if name not in skip:
            _add(parser, name, field)


def _flag(cls: type[BaseSettings], loc: tuple) -> str:
    name = "-".join(str(part) for part in loc)
    field = cls.model_fields.get(name)
    positional = field is not None and (field.json_schema_extra or {}).get("positional")
    return name if positional else config.flag(name)


def _message(error: dict) -> str:
    if error["type"] in _BOUNDS:
        op, key = _BOUNDS[error["type"]]
        return f"must be {op} {error['ctx'][key]}"
    if error["type"] == "missing":
        return "required"
    return error["msg"].removeprefix("Value error, ")


def settings_from(cls: type[BaseSettings], args: argparse.Namespace, **overrides):
    """Build the settings from given flags + env + defaults; InvalidSettings names each bad flag."""
    given = {k: v for k, v in vars(args).items() if k in cls.model_fields and v is not None}
    try:
        return cls(**given, **overrides)
    except pydantic.ValidationError as err:
        problems = [(f"{_flag(cls, e['loc'])}: " if e["loc"] else "") + _message(e) for e in err.errors()]
        raise InvalidSettings("; ".join(problems)) from None


def guarded(command: str, main, errors: tuple[type[Exception], ...] = ()):
    """main(args), with InvalidSettings (and `errors`) turned into one line on stderr and exit code 2."""
    def handle(args: argparse.Namespace) -> int:
        try:
            return int(main(args) or 0)
        except (InvalidSettings, *errors) as exc:
            print(f"worldenv {command}: error: {exc}", file=sys.stderr)
            return 2
    return handle


def command(parser: argparse.ArgumentParser, name: str, cls: type[BaseSettings], main,
            errors: tuple[type[Exception], ...] = ()) -> None:
    """Give `parser` the flags of `cls` and a handler that runs main(settings)."""
    add_settings(parser, cls)
    parser.set_defaults(func=guarded(name, lambda args: main(settings_from(cls, args)), errors))
