"""Named image axes: which dimension of an array is time, depth, channel, height or width.

Letters (case-insensitive on input, upper case on output):

``T`` time, ``Z`` depth (planes of a volume), ``C`` channel, ``Y`` height, ``X`` width,
``S`` RGB(A) samples (colour, 3 or 4 entries; segmented as one grayscale channel made by
:func:`.normalize.to_gray`).

Every array the core segments is first brought to the canonical order ``(T, Z, C, Y, X)``
by :func:`to_tzcyx` (absent axes become singletons); labels come back as ``(T, Z, Y, X)``
and :func:`labels_from_tzyx` gives them the input's own axes minus ``C`` and ``S``
(:func:`labels_axes`). The axes come from the user (:func:`parse_axes`), from the file
(:func:`axes_from_tiff`) or from the shape (:func:`guess_axes`), in that order of trust.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "AXES",
    "MAX_CHANNELS",
    "AxesInfo",
    "parse_axes",
    "guess_axes",
    "axes_from_tiff",
    "anisotropy_from_tiff",
    "to_tzcyx",
    "labels_axes",
    "labels_from_tzyx",
    "pick_channel",
    "pick_channels",
    "parse_channels",
]

#: The letters an axes string may use.
AXES = "TZCYXS"
#: The canonical order of :func:`to_tzcyx`.
CANONICAL = "TZCYX"
#: A leading (or trailing) axis this short, next to two long ones, is read as channels.
MAX_CHANNELS = 7
#: The two image axes are at least this long when a short axis beside them is guessed as
#: channels (so a 696 x 2 plane is never taken for an image).
_MIN_SIDE = 16

_NAMES = {"T": "time", "Z": "depth", "C": "channel", "Y": "height", "X": "width", "S": "RGB samples"}


def _fmt_shape(shape) -> str:
    return "(" + ", ".join(str(int(n)) for n in shape) + (",)" if len(shape) == 1 else ")")


def parse_axes(text: str, shape, option: str = "--axes") -> str:
    """The axes string ``text`` checked against an array ``shape``, upper case.

    Rules: letters from ``T Z C Y X S`` (any case; spaces, commas and dashes are ignored),
    each at most once, ``Y`` and ``X`` always, one letter per dimension, and ``S`` (RGB
    samples) only on an axis of 3 or 4 entries. Anything else raises one ``ValueError``
    whose message names ``option`` (how the user gave the axes: ``"--axes"`` on the
    command line, ``"axes"`` in a widget), e.g. ``--axes ZYX does not fit an image of
    shape (2, 30, 64, 64): 3 axes for 4 dimensions``.
    """
    shape = tuple(int(n) for n in shape)
    raw = "" if text is None else str(text)
    axes = "".join(ch for ch in raw.upper() if ch not in " ,-_")
    if not axes:
        raise ValueError(f"{option} is empty: give one letter per dimension of the image {_fmt_shape(shape)} from T, Z, C, Y, X (and S for RGB samples)")
    bad = sorted({ch for ch in axes if ch not in AXES})
    if bad:
        raise ValueError(
            f"{option} {raw}: unknown axis {', '.join(repr(b) for b in bad)}; use T (time), Z (depth), C (channel), "
            "Y, X (height, width) and S (RGB samples)"
        )
    twice = sorted({ch for ch in axes if axes.count(ch) > 1})
    if twice:
        raise ValueError(f"{option} {axes}: axis {', '.join(twice)} given more than once")
    missing = [ch for ch in "YX" if ch not in axes]
    if missing:
        raise ValueError(f"{option} {axes}: needs both Y and X (the image's height and width), {' and '.join(missing)} missing")
    if len(axes) != len(shape):
        raise ValueError(
            f"{option} {axes} does not fit an image of shape {_fmt_shape(shape)}: "
            f"{len(axes)} axes for {len(shape)} dimensions"
        )
    if "S" in axes and shape[axes.index("S")] not in (3, 4):
        n = shape[axes.index("S")]
        raise ValueError(
            f"{option} {axes} does not fit an image of shape {_fmt_shape(shape)}: S (RGB samples) needs 3 or 4 "
            f"entries, that axis has {n}; use C for channels"
        )
    for ch in "YX":
        if shape[axes.index(ch)] < 1:
            raise ValueError(f"{option} {axes}: the image of shape {_fmt_shape(shape)} is empty along {ch}")
    return axes


def guess_axes(shape, rgb: bool | None = None) -> str:
    """Axes for an array of ``shape`` when neither the user nor the file says.

    The last two long axes are ``Y X``. Short axes (at most :data:`MAX_CHANNELS`
    entries) beside them are channels; anything else is depth before time:

    - 2D: ``YX``.
    - ``(H, W, 3|4)``: ``YXS`` (RGB(A), as napari reads it); with ``rgb=False``, ``YXC``.
    - ``(H, W, n)`` with ``n <= 4`` and ``H, W >= 16`` (e.g. ``(520, 696, 2)``): ``YXC``
      (channel-last, not 520 planes of 696 x 2). The same trailing rule applies in 4D/5D
      (``ZYXC``/``ZYXS``, ``TZYXC``/``TZYXS``).
    - ``(n, H, W)``: ``ZYX``, whatever ``n``: a few planes and a few channels look alike,
      and as planes every one is segmented (as channels all but one would be dropped);
      ``--axes CYX`` or the file's metadata say otherwise.
    - ``(a, b, H, W)``: ``CZYX`` when ``a <= 7 < b`` (channels first, as OME/Bio-Formats
      arrays come); ``ZCYX`` when ``b <= 7 < a`` (ImageJ hyperstack order); ``CZYX`` when both
      are short; ``TZYX`` when both are long (a time-lapse of volumes).
    - ``(a, b, c, H, W)``: ``TZCYX`` (ImageJ's order); ``TCZYX`` when ``b <= 7 < c``.

    ``rgb=True`` insists on a colour axis (the last one, 3 or 4 entries); ``rgb=False``
    forbids ``S``. Raises ``ValueError`` for fewer than 2 or more than 5 dimensions.
    """
    shape = tuple(int(n) for n in shape)
    nd = len(shape)
    if nd < 2:
        raise ValueError(f"need an image with at least 2 dimensions, got shape {_fmt_shape(shape)}")
    if rgb and shape[-1] not in (3, 4):
        raise ValueError(f"an RGB image needs a last axis of 3 or 4 entries, got shape {_fmt_shape(shape)}")
    if nd == 2:
        return "YX"
    last, pair = shape[-1], min(shape[-3], shape[-2])
    trailing = bool(rgb) or (last <= 4 and (pair >= _MIN_SIDE or (rgb is None and last in (3, 4) and pair > 4)))
    if trailing:
        tail = "S" if (last in (3, 4) and rgb is not False) else "C"
        if nd > 5:
            raise ValueError(f"cannot guess the axes of an image of shape {_fmt_shape(shape)}: give them")
        return "TZYX"[4 - (nd - 1):] + tail if nd > 3 else "YX" + tail
    if nd == 3:  # channels or planes? planes: every one is segmented, nothing is dropped
        return "ZYX"
    if nd == 4:
        a, b = shape[0], shape[1]
        if a <= MAX_CHANNELS and b <= MAX_CHANNELS:
            return "CZYX"
        if a <= MAX_CHANNELS:
            return "CZYX"
        if b <= MAX_CHANNELS:
            return "ZCYX"
        return "TZYX"
    if nd == 5:
        if shape[1] <= MAX_CHANNELS < shape[2]:
            return "TCZYX"
        return "TZCYX"
    raise ValueError(f"cannot guess the axes of an image with {nd} dimensions, shape {_fmt_shape(shape)}: give them")


# ---- TIFF metadata ---------------------------------------------------------------------
def _tiff_axes(tf) -> tuple[str | None, tuple]:
    series = tf.series[0]
    shape = tuple(series.shape)
    raw = str(series.axes).upper()
    try:
        photometric = int(tf.pages[0].photometric)
    except Exception:  # noqa: BLE001 - unusual files: treat samples as unknown
        photometric = -1
    colour = photometric in (2, 6)  # RGB, YCbCr
    letters = []
    for ch, n in zip(raw, shape):
        if ch in "TZCYX":
            letters.append(ch)
        elif ch == "S" and colour and n in (3, 4):
            letters.append("S")
        else:  # Q (unknown), I (sequence), S of a grayscale file, E, H, A, P, R, ...
            letters.append("?")
    if len(letters) != len(shape):
        return None, shape
    if all(ch in "?YXS" for ch in letters) and "?" in letters:
        return None, shape  # the file says nothing beyond height and width: let the caller guess
    if "?" in letters:
        try:
            guess = guess_axes(shape, rgb=("S" in letters) or None)
        except ValueError:
            return None, shape
        for i, ch in enumerate(letters):
            if ch != "?":
                continue
            options = [guess[i]] + [c for c in "ZCT" if c != guess[i]]
            pick = next((c for c in options if c not in letters and c not in "YXS"), None)
            if pick is None:
                return None, shape
            letters[i] = pick
    axes = "".join(letters)
    try:
        return parse_axes(axes, shape), shape
    except ValueError:
        return None, shape


def axes_from_tiff(path) -> str | None:
    """The axes of ``tifffile.imread(path)`` (its first series, singleton axes dropped)
    from the file's OME-TIFF, ImageJ or tifffile metadata; ``None`` when the file says
    nothing beyond height and width (use :func:`guess_axes`) or cannot be read as TIFF.

    tifffile's letters ``T Z C Y X`` are kept; ``S`` is kept for RGB(A) files (photometric
    RGB/YCbCr, 3-4 samples) and read as unknown otherwise; unknown axes (``Q``, ``I``, ...)
    next to known ones are filled in from :func:`guess_axes`.
    """
    import tifffile

    try:
        with tifffile.TiffFile(str(Path(path))) as tf:
            axes, _ = _tiff_axes(tf)
    except Exception:  # noqa: BLE001 - not a TIFF, or one tifffile cannot parse
        return None
    return axes


_UNITS = {"pm": 1e-6, "nm": 1e-3, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0, "micron": 1.0, "microns": 1.0,
          "mm": 1e3, "cm": 1e4, "m": 1e6, "a": 1e-4, "å": 1e-4, "\u212b": 1e-4}


def _ome_anisotropy(xml: str) -> float | None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    for el in root.iter():
        if el.tag.rsplit("}", 1)[-1] != "Pixels":
            continue
        sz, sx = el.get("PhysicalSizeZ"), el.get("PhysicalSizeX")
        if sz is None or sx is None:
            return None
        uz = el.get("PhysicalSizeZUnit", "µm").strip().lower()
        ux = el.get("PhysicalSizeXUnit", "µm").strip().lower()
        fz, fx = float(sz), float(sx)
        if uz != ux:
            if uz not in _UNITS or ux not in _UNITS:
                return None
            fz, fx = fz * _UNITS[uz], fx * _UNITS[ux]
        return fz / fx if fz > 0 and fx > 0 else None
    return None


def anisotropy_from_tiff(path) -> float | None:
    """Z step over the X pixel size, from the TIFF's metadata; ``None`` when unknown.

    ImageJ files: ``spacing`` (the z step) over ``1 / XResolution`` (both in the file's
    ``unit``); OME-TIFF: ``PhysicalSizeZ`` over ``PhysicalSizeX`` (units converted). A
    result of 3 means the planes are 3 pixels apart. Unreadable or absent values give
    ``None``; so does a file that is neither ImageJ nor OME.
    """
    import tifffile

    try:
        with tifffile.TiffFile(str(Path(path))) as tf:
            if tf.is_ome and tf.ome_metadata:
                value = _ome_anisotropy(tf.ome_metadata)
                if value is not None:
                    return float(value)
            ij = tf.imagej_metadata
            if ij and ij.get("spacing") is not None:
                spacing = float(ij["spacing"])
                tag = tf.pages[0].tags.get("XResolution")
                px = 1.0
                if tag is not None:
                    num, den = tag.value if isinstance(tag.value, tuple) else (tag.value, 1)
                    if num and den:
                        px = float(den) / float(num)  # XResolution is pixels per unit
                if spacing > 0 and px > 0:
                    return spacing / px
    except Exception:  # noqa: BLE001 - missing or malformed metadata: unknown
        return None
    return None


# ---- reordering ------------------------------------------------------------------------
@dataclass(frozen=True)
class AxesInfo:
    """How :func:`to_tzcyx` read an array.

    ``axes``: the input's axes; ``shape``: its shape; ``labels_axes`` / ``labels_shape``:
    the axes and shape of its labels (input without ``C`` and ``S``); ``rgb``: whether an
    ``S`` axis was turned into one grayscale channel; ``notes``: one line per thing done.
    """

    axes: str
    shape: tuple
    labels_axes: str
    labels_shape: tuple
    rgb: bool
    notes: tuple = ()


def labels_axes(axes: str) -> str:
    """The axes of the labels of an image with ``axes``: the same without ``C`` and ``S``."""
    return "".join(ch for ch in axes.upper() if ch not in "CS")


def to_tzcyx(image: np.ndarray, axes: str) -> tuple[np.ndarray, AxesInfo]:
    """``image`` as a ``(T, Z, C, Y, X)`` array, and how it was read (:class:`AxesInfo`).

    ``axes`` (checked with :func:`parse_axes`) names each dimension of ``image``; absent
    axes become singletons. An ``S`` axis (RGB samples) is made one float32 grayscale
    channel by :func:`.normalize.to_gray` (the darkest colour channel on a bright
    background, else the brightest). Without ``S`` the result is a view of ``image`` (no
    copy); the data type is kept.
    """
    image = np.asarray(image)
    axes = parse_axes(axes, image.shape)
    shape = tuple(int(n) for n in image.shape)
    notes = []
    work_axes = axes
    rgb = "S" in axes
    if rgb:
        from .normalize import to_gray

        image = to_gray(np.moveaxis(image, axes.index("S"), -1))
        work_axes = axes.replace("S", "")
        notes.append("RGB image: segmented one channel from its colours (the darkest on a bright background, else the brightest)")
    present = [ch for ch in CANONICAL if ch in work_axes]
    out = np.moveaxis(image, [work_axes.index(ch) for ch in present], list(range(len(present))))
    full = tuple(out.shape[present.index(ch)] if ch in present else 1 for ch in CANONICAL)
    out = out.reshape(full)
    lax = labels_axes(axes)
    lshape = tuple(int(image.shape[work_axes.index(ch)]) for ch in lax)
    info = AxesInfo(axes, shape, lax, lshape, rgb, tuple(notes))
    return out, info


def labels_from_tzyx(labels: np.ndarray, axes: str) -> np.ndarray:
    """``(T, Z, Y, X)`` labels given the axes :func:`labels_axes` of an input with ``axes``.

    A ``T`` or ``Z`` the input lacks must have length 1 and is dropped; the others are put
    where the input had them (a view, no copy). E.g. ``axes="ZCYX"`` gives ``(Z, Y, X)``;
    ``axes="YXZ"`` gives ``(Y, X, Z)``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 4:
        raise ValueError(f"expected (T, Z, Y, X) labels, got shape {_fmt_shape(labels.shape)}")
    target = labels_axes(axes)
    for i, ch in enumerate("TZ"):
        if ch not in target and labels.shape[i] != 1:
            raise ValueError(f"labels of shape {_fmt_shape(labels.shape)} have {labels.shape[i]} entries along {ch}, which axes {axes} lack")
    drop = tuple(i for i, ch in enumerate("TZ") if ch not in target)
    out = labels.reshape(tuple(n for i, n in enumerate(labels.shape) if i not in drop)) if drop else labels
    have = [ch for ch in "TZYX" if ch in target]
    return np.moveaxis(out, list(range(len(have))), [target.index(ch) for ch in have])


def pick_channel(tzcyx: np.ndarray, channel: int | None = None, option: str = "--channel") -> np.ndarray:
    """The ``(T, Z, Y, X)`` planes of one channel of a :func:`to_tzcyx` array (a view).

    ``channel`` counts from 0; ``None`` is fine for a single-channel image and an error
    (``ValueError``, naming ``option``) for several, because picking one silently would
    segment, say, the membrane stain instead of the nuclei.
    """
    n = tzcyx.shape[2]
    if channel is None:
        if n > 1:
            raise ValueError(f"the image has {n} channels (axis C): choose the one to segment with {option} 0..{n - 1}")
        channel = 0
    if int(channel) != channel or not 0 <= int(channel) < n:
        raise ValueError(f"{option} {channel} does not exist: the image has {n} channel{'s' if n != 1 else ''} (0..{n - 1})")
    return tzcyx[:, :, int(channel)]


def pick_channels(tzcyx: np.ndarray, channels, n: int, option: str = "--channel") -> tuple[np.ndarray, tuple[int, ...]]:
    """The ``(T, Z, n, Y, X)`` channels a model that reads ``n`` channels is given, and
    which they are: ``channels`` (``n`` numbers, in the model's order) or, when ``None``,
    the image's first ``n``. A wrong count or a missing channel is a ``ValueError`` that
    names ``option``."""
    have = tzcyx.shape[2]
    if channels is None:
        if have < n:
            raise ValueError(
                f"the model reads {n} channels but the image has {have} (axis C); "
                + ("give its axes with a C, e.g. --axes CYX" if have == 1 else f"give {n} images as channels")
            )
        channels = tuple(range(n))
    channels = (channels,) if np.isscalar(channels) else tuple(channels)
    if len(channels) != n:
        raise ValueError(f"the model reads {n} channels: give {n} channel numbers ({option}), e.g. {','.join(str(i) for i in range(n))}; got {len(channels)}")
    for c in channels:
        if int(c) != c or not 0 <= int(c) < have:
            raise ValueError(f"{option} {c} does not exist: the image has {have} channel{'s' if have != 1 else ''} (0..{have - 1})")
    return tzcyx[:, :, [int(c) for c in channels]], tuple(int(c) for c in channels)


def parse_channels(value, option: str = "--channel"):
    """Channel numbers as typed: ``"1"`` -> 1, ``"1,0"`` -> ``(1, 0)`` (for a model that reads
    several channels, in its order), empty -> ``None``; ``ValueError`` naming ``option``."""
    if value is None or not str(value).strip():
        return None
    try:
        chans = tuple(int(v) for v in str(value).replace(" ", "").split(","))
    except ValueError:
        raise ValueError(f"{option} takes channel numbers counted from 0, e.g. 1 or 1,0; got {value!r}") from None
    if any(c < 0 for c in chans):
        raise ValueError(f"{option} must be >= 0, got {value}")
    return chans[0] if len(chans) == 1 else chans
