"""Exceptions whose message is meant for the user as it is, and the clean printing of them.

Every entry point prints a :class:`UserFacingError` as one ``error:`` block without a traceback:
``python -m custom`` catches it, and the bundles' ``initialize`` section calls
:func:`install_excepthook`, so ``python -m monai.bundle run`` prints the error found in the raised chain
(MONAI wraps it in ``RuntimeError: Failed to instantiate component ...``) before anything else.
Set the environment variable ``MENGROWTH_DEBUG=1`` to get the full Python traceback as well.
"""

from __future__ import annotations

import os
import sys
import traceback
from types import TracebackType

__all__ = [
    "DEBUG_ENV",
    "DataValidationError",
    "UserFacingError",
    "find_user_error",
    "format_user_error",
    "install_excepthook",
]

#: Environment variable that, when set to a true value, keeps the Python traceback in front of the message.
DEBUG_ENV = "MENGROWTH_DEBUG"


class UserFacingError(ValueError):
    """An error caused by the user's input (data, arguments); its message says what and where."""


class DataValidationError(UserFacingError):
    """Invalid input data (a ``ValueError``); the message lists every problem, one per line."""


def find_user_error(err: BaseException | None) -> UserFacingError | None:
    """The first :class:`UserFacingError` in ``err``'s ``__cause__`` / ``__context__`` chain, or ``None``."""
    seen: set[int] = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, UserFacingError):
            return err
        err = err.__cause__ or err.__context__
    return None


def debug_enabled() -> bool:
    """``MENGROWTH_DEBUG`` is set to something other than ``""``, ``0``, ``false`` or ``no``."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def format_user_error(err: UserFacingError) -> str:
    """``error: <message>`` plus a hint on the debug switch (the message itself is printed unchanged)."""
    return f"error: {err}\n(set {DEBUG_ENV}=1 for the Python traceback)"


def _hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
    user = find_user_error(value)
    if user is None or debug_enabled():
        if user is not None:  # debug: the traceback, then the message again as the last thing printed
            traceback.print_exception(kind, value, tb)
            print(f"error: {user}", file=sys.stderr)
            return
        sys.__excepthook__(kind, value, tb)
        return
    print(format_user_error(user), file=sys.stderr)


def install_excepthook() -> bool:
    """Make an uncaught :class:`UserFacingError` (anywhere in the raised chain) print as a clean message.

    Called from the bundles' ``initialize`` section. The process still exits with status 1. Returns ``True``.
    """
    sys.excepthook = _hook
    return True
