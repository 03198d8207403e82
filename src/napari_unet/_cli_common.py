"""What every command-line module shares: the user-error type and argument parsing helpers.

The commands (``_cli_*``) import from here, never from :mod:`napari_unet.cli`, which only
parses and dispatches: imports go one way.
"""

from __future__ import annotations

import math


class UserError(Exception):
    """An error caused by the user's input: reported in one line, exit status 1."""


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is worded for the user (one line) rather than a bug (a traceback).

    :class:`UserError`, ``OSError`` and ``MemoryError`` always are. A ``ValueError`` is when
    napari-unet raised it itself (its code says what is wrong with the input, and wraps what
    readers raise on bad files); one raised inside numpy, scipy or torch and not caught on
    the way is a bug, and its traceback must show.
    """
    if isinstance(exc, (UserError, OSError, MemoryError)):
        return True
    if not isinstance(exc, ValueError):
        return False
    tb = exc.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("napari_unet")


def parse_diameter(value):
    """``--diameter`` as a positive number of pixels, ``"auto"`` or ``None``."""
    if value is None:
        return None
    if str(value).lower() == "auto":
        return "auto"
    try:
        d = float(value)
    except ValueError:
        raise ValueError(f"--diameter must be a number of pixels or 'auto', got {value!r}") from None
    if not (d > 0 and math.isfinite(d)):
        raise ValueError("--diameter must be a positive number of pixels")
    return d
