"""Refuse unknown or surplus command-line arguments before a command runs.

``fire`` binds ``--name value`` pairs to the function's parameters only when it calls it, and hands any
argument it could not bind to the *result* (for a command returning a path string: "available commands:
capitalize | casefold | ..."), after the whole job has run with the defaults. :func:`check_arguments` compares
the arguments with the command function's signature first and names the valid options.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from custom.data.errors import UserFacingError

__all__ = ["UsageError", "check_arguments"]

_HELP = {"--help", "-h", "--helpfull", "--interactive", "-i", "--trace", "-t", "--verbose", "-v", "--completion"}


class UsageError(UserFacingError):
    """A command line that does not fit the command (unknown option, too many values)."""


def check_arguments(command: str, func: Callable[..., Any], args: Sequence[str]) -> None:
    """Raise :class:`UsageError` when ``args`` (after the command name) do not fit ``func``'s signature.

    Accepted: ``--name value``, ``--name=value``, ``--name`` alone (a flag, fire's ``True``), ``--noname`` for a
    parameter ``name``, dashes for underscores, fire's own switches after a lone ``--``; positional values up to
    the number of parameters not given by name. A ``**kwargs`` parameter accepts any option name.
    """
    params = [
        p
        for p in inspect.signature(func).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    names = [p.name for p in params]
    open_options = any(p.kind is p.VAR_KEYWORD for p in inspect.signature(func).parameters.values())
    valid = ", ".join(f"--{n}" for n in names) or "(none)"
    given: set[str] = set()
    positional: list[str] = []
    items = list(args)
    if "--" in items:
        items = items[: items.index("--")]
    i = 0
    while i < len(items):
        arg = items[i]
        if arg in _HELP:
            return
        if arg.startswith("--") and len(arg) > 2:
            key, has_value, _ = arg[2:].partition("=")
            key = key.replace("-", "_")
            if key not in names and key.startswith("no") and key[2:] in names:
                given.add(key[2:])
                i += 1
                continue
            if key not in names and not open_options:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean --{close[0]}?)" if close else ""
                raise UsageError(
                    f"python -m custom {command}: unknown option --{key}{hint}; valid options: {valid}; "
                    "nothing was run"
                )
            given.add(key)
            takes_value = not has_value and i + 1 < len(items) and not items[i + 1].startswith("--")
            i += 2 if takes_value else 1
            continue
        positional.append(arg)
        i += 1
    free = [n for n in names if n not in given]
    if len(positional) > len(free):
        extra = " ".join(positional[len(free) :])
        raise UsageError(
            f"python -m custom {command}: too many values ({extra!r} left over after "
            f"{', '.join(free) or 'the named options'}); valid options: {valid}; nothing was run"
        )
