"""What every command-line module shares: the user-error type and argument parsing helpers.

The commands (``_cli_*``) import from here, never from :mod:`napari_unet.cli`, which only
parses and dispatches: imports go one way.
"""

from __future__ import annotations

import math


class UserError(Exception):
    """An error caused by the user's input: reported in one line, exit status 1."""


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is worded for the user (one line) rather than a bug (a traceback):
    :class:`UserError`, or what :func:`.core.errors.is_input_error` says."""
    from .core.errors import is_input_error

    return isinstance(exc, UserError) or is_input_error(exc)


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
