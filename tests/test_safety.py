"""Safety matrix that stays: odd inputs on `segment`, a malicious pickle on every load path,
``kill -9`` during a save, annotation ids of any size. Each case either works or ends in
one clear line with a non-zero exit; nothing from a file is ever executed."""

import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main
from napari_unet.testing import odd_arrays


class _Evil:
    """Unpickling this creates ``marker``: proof that a file's code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_file(path, marker):
    with open(path, "wb") as f:
        pickle.dump({"format": "napari-unet/1", "config": {}, "state_dict": _Evil(marker)}, f)
    return path


# ---- segment on every kind of odd array ---------------------------------------------------
RNG = np.random.default_rng(0)
ARRAYS = odd_arrays()


@pytest.mark.parametrize("name", list(ARRAYS))
def test_segment_any_array_works_or_says_why_in_one_line(name, tmp_path, tiny_model, capsys):
    arr = ARRAYS[name]
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, arr)
    before = src.read_bytes()
    out = tmp_path / "out"
    rc = main(["segment", str(src), "-o", str(out), "--model", str(tiny_model), "-q"])
    err = capsys.readouterr().err.strip()
    assert src.read_bytes() == before  # the input is never touched
    if rc == 0:
        labels = tifffile.imread(out / "in_labels.tif")
        cells = tifffile.imread(out / "in_cells.tif")
        yx = arr.shape[-3:-1] if name in ("RGB", "RGBA") else arr.shape[-2:]
        assert labels.shape == cells.shape and labels.shape[-2:] == yx  # (a guessed C axis is dropped)
        assert labels.dtype in (np.uint16, np.uint32) and set(np.unique(cells)) <= {0, 1}
    else:
        assert rc == 1 and "error:" in err and len(err.splitlines()) == 1, err
        assert "Traceback" not in err
        assert not out.exists() or not any(out.glob("in_*.tif"))  # nothing half written


def test_the_odd_arrays_that_must_work_do(tmp_path, tiny_model):
    # the matrix above allows a clear refusal; these are images a user has and must get labels
    for name in ("uint8 2D", "int8 2D", "float32 NaN", "float64 inf", "constant", "bool", "RGB", "RGBA", "stack ZYX"):
        src = tmp_path / f"{name.replace(' ', '_')}.tif"
        tifffile.imwrite(src, ARRAYS[name])
        assert main(["segment", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model), "-q"]) == 0, name


# ---- a malicious pickle on every path that loads a file -----------------------------------
def test_a_pickle_with_code_is_never_run_on_any_load_path(tmp_path, tiny_model, capsys):
    from napari_unet.core.models import install_model, list_models, user_dir

    marker = tmp_path / "pwned"
    evil = _evil_file(tmp_path / "evil.pt", marker)
    img = tmp_path / "img.tif"
    tifffile.imwrite(img, RNG.integers(0, 255, (48, 48)).astype(np.uint8))
    ann = tmp_path / "ann.tif"
    a = np.zeros((48, 48), np.uint8)
    a[5:10, 5:10], a[30:40, 30:40] = 1, 2
    tifffile.imwrite(ann, a)
    runs = {
        "segment --model": ["segment", str(img), "-o", str(tmp_path / "o"), "--model", str(evil)],
        "finetune --base": ["finetune", "--images", str(img), "--annotations", str(ann), "--output",
                            str(tmp_path / "ft.pt"), "--base", str(evil), "--time-budget", "1"],
        "evaluate": ["evaluate", str(evil), "--labels", str(ann)],
        "export": ["export", str(evil), "--output", str(tmp_path / "x.zip")],
    }
    for what, args in runs.items():
        assert main(args) == 1, what
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "Traceback" not in err and "weights_only" not in err, (what, err)
    (tmp_path / "m.pt.ckpt").write_bytes(evil.read_bytes())  # train --resume
    lab = np.zeros((48, 48), np.uint16)
    lab[5:15, 5:15], lab[25:40, 25:40] = 1, 2
    tifffile.imwrite(tmp_path / "img_labels.tif", lab)
    assert main(["train", "--images", str(img), "--output", str(tmp_path / "m.pt"), "--resume", "--steps", "1"]) == 1
    with pytest.raises(ValueError):  # the widget's Import
        install_model(evil, "evil")
    user_dir(create=True)
    (user_dir() / "planted.pt").write_bytes(evil.read_bytes())  # a file dropped in the models folder
    assert "planted" in [m.name for m in list_models()]  # listed by name only, not loaded
    assert main(["segment", str(img), "-o", str(tmp_path / "o2"), "--model", "planted"]) == 1
    assert not marker.exists()


def test_a_model_file_in_another_pickle_protocol_gives_no_warning(tmp_path, tiny_model):
    import torch

    from napari_unet.core.models import load_model

    p5 = tmp_path / "p5.pt"
    torch.save(torch.load(tiny_model, weights_only=True), p5, pickle_protocol=5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="cannot read model file"):
            load_model(p5)
    assert not caught, [str(w.message)[:80] for w in caught]  # torch's "Detected pickle protocol 5"


# ---- kill -9 during a save -----------------------------------------------------------------
_SLOW_WRITER = textwrap.dedent(
    """
    import sys, time
    from napari_unet.core.io import atomic_write

    def write(f):
        f.write(b"partial")
        f.flush()
        print("writing", flush=True)
        time.sleep(60)

    atomic_write(sys.argv[1], write)
    """
)


def test_kill_9_during_a_save_keeps_the_old_file_and_the_next_save_cleans_up(tmp_path, tiny_model):
    from napari_unet.core.models import list_models, load_model, save_model, user_dir

    target = user_dir(create=True) / "mine.pt"
    save_model(target, load_model(tiny_model).model, {"name": "mine"})
    old = target.read_bytes()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_bytes() == old and load_model(target).name == "mine"  # the old file, whole
    left = list(target.parent.glob(".mine.pt.*.tmp"))
    assert len(left) == 1  # what the killed writer left ...
    assert "mine" in [m.name for m in list_models()]  # ... is removed when the folder is listed
    assert not left[0].exists()
    # and by the next save of the same file, wherever it is
    stray = tmp_path / "elsewhere"
    stray.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(stray / "x.pt")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert len(list(stray.glob(".x.pt.*.tmp"))) == 1
    save_model(stray / "x.pt", load_model(tiny_model).model)
    assert [p.name for p in stray.iterdir()] == ["x.pt"]


def test_a_live_writers_temporary_file_is_left_alone(tmp_path):
    from napari_unet.core.io import remove_stale

    mine = tmp_path / f".x.tif.{socket.gethostname()}-{os.getpid()}.abcd1234.tmp"
    mine.write_bytes(b"in progress")
    other_host = tmp_path / ".x.tif.some-other-host-1.abcd1234.tmp"
    other_host.write_bytes(b"in progress elsewhere")
    assert remove_stale(tmp_path / "x.tif") == []
    assert mine.exists() and other_host.exists()


# ---- annotation ids of any size --------------------------------------------------------------
def test_instance_annotation_ids_of_any_size_are_read_as_cells():
    from napari_unet.core.training import samples_from_annotations

    img = RNG.random((64, 64)).astype(np.float32)
    ann = np.zeros((64, 64), np.int64)
    ann[5:20, 5:20] = 2**40
    ann[30:50, 30:50] = 2**40 + 7
    train, val, kinds = samples_from_annotations([img], [ann])
    assert kinds == ["instances"]
    assert sorted(np.unique(train[0].instances)) == [0, 1, 2]
    ann[0, 0] = -1
    with pytest.raises(ValueError, match="0 \\(background\\) or positive"):
        samples_from_annotations([img], [ann])


# ---- a bug is not a user error -------------------------------------------------------------
def test_a_value_error_from_inside_numpy_is_a_bug_with_its_traceback(tmp_path, tiny_model, monkeypatch, capsys):
    from napari_unet._cli_common import is_user_error, parse_diameter
    from napari_unet.core import pipeline

    with pytest.raises(ValueError) as ours:
        parse_diameter("big")
    assert is_user_error(ours.value)  # worded by napari-unet for the user
    with pytest.raises(ValueError) as theirs:
        np.zeros(3).reshape(2, 2)
    assert not is_user_error(theirs.value)

    def broken(*args, **kwargs):
        return np.zeros(3).reshape(2, 2)  # an internal mistake

    monkeypatch.setattr(pipeline, "segment_input", broken)
    src = tmp_path / "in.tif"
    tifffile.imwrite(src, ARRAYS["uint8 2D"])
    with pytest.raises(ValueError, match="reshape"):  # not disguised as "error: ..." in one line
        main(["segment", str(src), "-o", str(tmp_path / "out"), "--model", str(tiny_model), "-q"])
    # ... while a user's mistake still is one line
    assert main(["segment", str(src), "-o", str(tmp_path / "out"), "--diameter", "big"]) == 1
    assert "--diameter must be" in capsys.readouterr().err


def test_a_folder_run_reports_bad_files_but_raises_bugs(tmp_path, monkeypatch):
    from napari_unet.core import batch

    src = tmp_path / "in"
    src.mkdir()
    (src / "a.tif").write_bytes(b"not a tiff")  # the file's fault: reported, the run goes on
    rows = list(batch.run_folder(None, [src / "a.tif"], tmp_path / "out"))
    assert rows[0]["status"].startswith("failed: cannot read") and rows[0]["cells"] is None
    tifffile.imwrite(src / "a.tif", ARRAYS["uint8 2D"])

    def broken(*args, **kwargs):
        return np.zeros(3).reshape(2, 2)  # an internal mistake

    monkeypatch.setattr(batch, "segment_file", broken)
    with pytest.raises(ValueError, match="reshape"):
        list(batch.run_folder(None, [src / "a.tif"], tmp_path / "out2"))


def test_large_label_images_are_written_in_strips_and_read_back_the_same(tmp_path):
    """Outputs are zlib TIFFs in strips of about ``STRIP_BYTES`` (compressed and read in
    threads), and read back exactly."""
    import numpy as np
    import tifffile

    from napari_unet.core import io

    labels = np.repeat(np.arange(1200, dtype=np.uint32).reshape(40, 30), 30, axis=0).repeat(40, axis=1)  # 1200 x 1200
    path = io.write_tiff(tmp_path / "x_labels.tif", labels)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        assert page.compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        assert page.rowsperstrip == io.STRIP_BYTES // (1200 * 4) and len(page.dataoffsets) > 1
    np.testing.assert_array_equal(tifffile.imread(path), labels)
