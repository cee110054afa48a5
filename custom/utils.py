"""Small functions shared by the components."""

from __future__ import annotations

from typing import Any

_TRUE = {"true", "1", "yes", "on", "y", "t"}
_FALSE = {"false", "0", "no", "off", "n", "f", "none", "null", ""}


def as_bool(value: Any) -> bool:
    """Interpret a config value as a bool, accepting the strings a command line passes (``--amp false``).

    ``python -m monai.bundle run ... --amp false`` hands the *string* ``'false'`` to the config (fire only
    converts ``False``), and ``bool('false')`` is True; every boolean switch goes through this function.
    """
    if isinstance(value, str):
        v = value.strip().lower()
        if v in _TRUE:
            return True
        if v in _FALSE:
            return False
        raise ValueError(f"expected a boolean (true/false), got {value!r}")
    return bool(value)
