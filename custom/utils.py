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


def cpu_model() -> str:
    """The CPU's model name (``model name`` in ``/proc/cpuinfo``, else ``lscpu``'s ``Model name``, else
    :func:`platform.processor`), or ``"unknown CPU"``."""
    import platform
    import subprocess
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return platform.processor() or "unknown CPU"
