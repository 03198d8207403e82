"""Which exceptions are the input's fault (worded for the user, one line) and which are bugs
(shown with their traceback): one rule for the command line and the widgets' batch runs."""

from __future__ import annotations

__all__ = ["is_input_error", "one_line"]


def is_input_error(exc: BaseException) -> bool:
    """``OSError`` and ``MemoryError`` always are; a ``ValueError`` is when napari-unet raised
    it itself (its code says what is wrong with the input, and wraps what readers raise on bad
    files). One raised inside numpy, scipy or torch and not caught on the way is a bug."""
    if isinstance(exc, (OSError, MemoryError)):
        return True
    if not isinstance(exc, ValueError):
        return False
    tb = exc.__traceback__
    if tb is None:
        return True
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("napari_unet")


def one_line(exc: BaseException) -> str:
    """The exception's message in one line (an ``OSError`` as its reason and file)."""
    text = str(exc).strip().splitlines()
    msg = text[0] if text else exc.__class__.__name__
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):
        msg = f"{exc.strerror or exc.__class__.__name__}: {exc.filename}" if exc.filename else msg
    return msg
