"""Settings classes as argparse flags: each field becomes `--field-name`, its description the help.

Flags left out fall through to environment variables (`WORLDENV_*`, `REDIS_URL`) and then to
the defaults, because only flags actually given are passed to the settings class.
"""
from __future__ import annotations

import argparse
import typing

import pydantic
from pydantic_settings import BaseSettings


def _flag_type(annotation):
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if args and typing.get_origin(annotation) is not typing.Literal else annotation
    if typing.get_origin(base) is typing.Literal:
        return str, [str(a) for a in typing.get_args(base)]
    return (base if base in (int, float, str) else str), None


def add_settings(parser: argparse.ArgumentParser, cls: type[BaseSettings], skip: tuple[str, ...] = ()) -> None:
    """Add one flag per settings field (default None, so unset flags don't override env vars)."""
    for name, field in cls.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        kind, choices = _flag_type(field.annotation)
        if kind is bool or field.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=field.description)
            continue
        parser.add_argument(flag, type=kind, choices=choices, default=None, dest=name,
                            help=f"{field.description} (default: {field.default})")


def settings_from(cls: type[BaseSettings], args: argparse.Namespace, **overrides):
    """Build the settings from given flags + env + defaults; exits with the field named on error."""
    given = {k: v for k, v in vars(args).items() if k in cls.model_fields and v is not None}
    try:
        return cls(**given, **overrides)
    except pydantic.ValidationError as err:
        problems = "; ".join(f"--{'-'.join(str(p) for p in e['loc']).replace('_', '-')}: {e['msg']}" for e in err.errors())
        raise SystemExit(f"worldenv: invalid settings: {problems}") from None
