"""Writing output files safely: atomically, and never onto a file the run may not replace.

Every file napari-unet writes goes through :func:`atomic_write`: the data goes to a
temporary file in the destination's folder, which is renamed over the destination only when
complete, so a crash, a full disk or a kill leaves either the old file or the new one, never
a truncated one (and no temporary file, except after ``kill -9``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["atomic_write", "write_tiff"]


def atomic_write(path: str | os.PathLike, write: Callable, text: bool = False, mode: int = 0o644) -> Path:
    """Call ``write(f)`` on a temporary file beside ``path``, then rename it to ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, mode)  # mkstemp makes it private; outputs are meant to be shared
        os.close(fd)
        with open(tmp, "w" if text else "wb", **({"newline": ""} if text else {})) as f:  # named: tifffile wants one
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_tiff(path: str | os.PathLike, array: np.ndarray, **kwargs) -> Path:
    """A zlib-compressed TIFF, written atomically (``kwargs`` go to ``tifffile.imwrite``)."""
    import tifffile

    return atomic_write(path, lambda f: tifffile.imwrite(f, array, compression="zlib", **kwargs))
