"""`napari-unet segment` on folders and zarr arrays: outputs never replace inputs or files
the run did not create, an interrupted folder resumes, --measure, --workers, file errors."""

import os

import numpy as np
import pytest
import tifffile

from napari_unet.cli import main

NAME = "IXMtest_A15_s5"


@pytest.fixture
def folder(data_dir, tmp_path):
    """Two small crops of a bbbc039 val image, with a ground-truth file beside the first."""
    img = tifffile.imread(data_dir / "bbbc039" / "val" / f"{NAME}.tif")
    lab = tifffile.imread(data_dir / "bbbc039" / "val" / f"{NAME}_labels.tif")
    d = tmp_path / "in"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", img[:192, :192])
    tifffile.imwrite(d / "a_labels.tif", lab[:192, :192])
    tifffile.imwrite(d / "b.tif", img[192:384, 192:384])
    return d


def run(*args):
    return main(["segment", *map(str, args), "--precision", "fp32", "-q"])


def test_folder_input_skips_label_files_and_resumes(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(folder, "-o", out) == 0
    assert sorted(p.name for p in out.iterdir()) == ["a_cells.tif", "a_labels.tif", "b_cells.tif", "b_labels.tif"]
    first = (out / "a_labels.tif").stat().st_mtime_ns
    (out / "b_labels.tif").unlink()  # an interrupted run: b's outputs incomplete
    (out / "b_cells.tif").unlink()
    assert run(folder, "-o", out) == 0
    assert (out / "a_labels.tif").stat().st_mtime_ns == first  # done before: skipped
    assert (out / "b_labels.tif").is_file()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_ground_truth_beside_inputs_is_never_overwritten(folder, capsys):
    truth = tifffile.imread(folder / "a_labels.tif")
    # the shell expands *.tif to the inputs and the ground truth: an output would hit an input
    assert run(folder / "a.tif", folder / "a_labels.tif", folder / "b.tif", "-o", folder) == 1
    assert "refusing to overwrite the input" in capsys.readouterr().err
    # the folder alone: a_labels.tif is not an input, but the run did not create it
    assert run(folder, "-o", folder) == 1
    assert "this run did not create it" in capsys.readouterr().err
    np.testing.assert_array_equal(tifffile.imread(folder / "a_labels.tif"), truth)
    assert not (folder / "b_labels.tif").exists()  # refused before any work
    # even with --overwrite an input is never replaced
    assert run(folder / "a.tif", folder / "a_labels.tif", "-o", folder, "--overwrite") == 1
    np.testing.assert_array_equal(tifffile.imread(folder / "a_labels.tif"), truth)


def test_unreadable_input_is_reported_and_the_rest_goes_on(folder, tmp_path, capsys):
    (folder / "c.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    assert run(folder / "c.tif", folder / "b.tif", "-o", out) == 1
    err = capsys.readouterr().err
    assert "c.tif" in err and "1 of 2 inputs failed" in err and "Traceback" not in err
    assert (out / "b_labels.tif").is_file()
    assert run(folder / "c.tif", folder / "b.tif", "-o", tmp_path / "o2", "--fail-fast") == 1
    assert not (tmp_path / "o2" / "b_labels.tif").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_unwritable_output_is_one_line(folder, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert run(folder / "b.tif", "-o", ro / "sub") == 1
    assert "Traceback" not in capsys.readouterr().err


def test_output_under_a_file_is_one_line(folder, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert run(folder / "b.tif", "-o", f / "sub") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "error" in err


def test_measure_writes_one_row_per_cell(folder, tmp_path):
    out = tmp_path / "out"
    assert run(folder / "b.tif", "-o", out, "--measure") == 0
    lab = tifffile.imread(out / "b_labels.tif")
    rows = (out / "b_measurements.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert header[:2] == ["label", "area"]
    assert len(rows) - 1 == len(np.unique(lab[lab > 0]))
    first = dict(zip(header, rows[1].split(",")))
    assert int(first["area"]) == np.count_nonzero(lab == int(first["label"]))


def test_zarr_input_gives_the_same_labels_as_the_tiff(folder, tmp_path):
    zarr = pytest.importorskip("zarr")
    img = tifffile.imread(folder / "b.tif")
    z = zarr.open_array(str(tmp_path / "b.zarr"), mode="w", shape=img.shape, chunks=(64, 64), dtype=img.dtype)
    z[:] = img
    assert run(tmp_path / "b.zarr", "-o", tmp_path / "out") == 0
    assert run(folder / "b.tif", "-o", tmp_path / "out") == 0
    labels = zarr.open_array(str(tmp_path / "out" / "b_labels.zarr"), mode="r")[:]
    np.testing.assert_array_equal(labels, tifffile.imread(tmp_path / "out" / "b_labels.tif"))


def test_workers_give_the_same_results_as_one_process(folder, tmp_path):
    pytest.importorskip("distributed")
    assert run(folder / "a.tif", folder / "b.tif", "-o", tmp_path / "one") == 0
    assert run(folder / "a.tif", folder / "b.tif", "-o", tmp_path / "two", "--workers", "2") == 0
    for n in ("a", "b"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "one" / f"{n}_labels.tif"),
                                      tifffile.imread(tmp_path / "two" / f"{n}_labels.tif"))


def test_two_lanes_write_the_same_labels_as_one_at_a_time(folder, tmp_path, capsys):
    """Several small files are segmented two at a time (``batch.lanes_for``); --fail-fast
    runs them one at a time. Same files, same labels, reported in input order."""
    assert main(["segment", str(folder / "b.tif"), str(folder / "a.tif"), "-o", str(tmp_path / "two"), "--precision", "fp32"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["b.tif", "a.tif"]
    assert run(folder / "b.tif", folder / "a.tif", "-o", tmp_path / "one", "--fail-fast") == 0
    for n in ("a", "b"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "one" / f"{n}_labels.tif"),
                                      tifffile.imread(tmp_path / "two" / f"{n}_labels.tif"))


def test_lanes_keep_the_order_share_the_threads_and_stop():
    import threading
    import time

    import torch

    from napari_unet.core.batch import in_lanes

    threads = torch.get_num_threads()
    started, seen, lock = [], [], threading.Lock()

    def work(i):
        with lock:
            started.append(i)
        seen.append(torch.get_num_threads())
        time.sleep(0.02 * (3 - i % 3))  # later items finish first
        if i == 5:
            raise RuntimeError("boom")
        return i

    assert list(in_lanes(work, range(5), 2)) == list(range(5))
    assert torch.get_num_threads() == threads and set(seen) == {max(1, threads // 2)}
    started.clear()
    assert list(in_lanes(work, range(10), 2, stop=lambda r: r == 1)) == [0, 1]
    assert max(started) <= 3  # nothing new after the stop: at most the queued ones ran
    with pytest.raises(RuntimeError, match="boom"):
        list(in_lanes(work, range(4, 8), 2))
    assert torch.get_num_threads() == threads
    started.clear()
    lanes = in_lanes(work, range(20, 30), 2)
    assert next(lanes) == 20
    lanes.close()  # the caller stops reading: what had not begun never starts
    assert max(started) <= 23 and torch.get_num_threads() == threads
    assert list(in_lanes(work, range(3), 1)) == [0, 1, 2]


def test_only_several_small_files_on_a_cpu_get_two_lanes(folder, tmp_path):
    import torch

    from napari_unet.core import batch

    class Seg:
        device = torch.device("cpu")

    files = [folder / "a.tif", folder / "b.tif"]
    assert batch.lanes_for(Seg(), files) == (2 if torch.get_num_threads() >= 2 else 1)
    assert batch.lanes_for(Seg(), files[:1]) == 1
    assert batch.lanes_for(Seg(), files + [tmp_path]) == 1  # a folder (zarr): one at a time
    Seg.device = torch.device("cuda")
    assert batch.lanes_for(Seg(), files) == 1


def test_finetune_checks_its_destination_before_training(folder, tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    ann = np.zeros((192, 192), np.uint8)
    ann[10:20, 10:20], ann[100:110, 100:110] = 1, 2
    tifffile.imwrite(tmp_path / "ann.tif", ann)
    rc = main(["finetune", "--images", str(folder / "a.tif"), "--annotations", str(tmp_path / "ann.tif"),
               "--output", str(f / "m.pt"), "--time-budget", "600"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot write" in err and "Traceback" not in err  # at once, not after 600 s


def test_resume_refuses_a_pickle_checkpoint(folder, tmp_path, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    out = tmp_path / "m.pt"
    (tmp_path / "m.pt.ckpt").write_bytes(pickle.dumps(Evil()))
    rc = main(["train", "--images", str(folder), "--output", str(out), "--resume", "--steps", "2"])
    err = capsys.readouterr().err
    assert rc == 1 and "not a napari-unet checkpoint" in err and "weights_only" not in err
    assert not (tmp_path / "pwned").exists()


def test_a_channel_of_a_two_channel_image_segments_like_the_image_alone(folder, tmp_path):
    img = tifffile.imread(folder / "b.tif")
    noise = np.random.default_rng(0).integers(0, 4000, img.shape).astype(img.dtype)
    tifffile.imwrite(tmp_path / "two.tif", np.stack([noise, img], -1))  # channel-last (H, W, 2)
    assert run(tmp_path / "two.tif", "-o", tmp_path / "o", "--channel", "1") == 0
    assert run(folder / "b.tif", "-o", tmp_path / "o") == 0
    two = tifffile.imread(tmp_path / "o" / "two_labels.tif")
    alone = tifffile.imread(tmp_path / "o" / "b_labels.tif")
    assert two.shape == img.shape  # YXC read from the shape, labels without C
    np.testing.assert_array_equal(two > 0, alone > 0)
    assert len(np.unique(two)) == len(np.unique(alone))


def test_a_phase_contrast_zarr_is_handed_to_cells_as_its_tiff_is(data_dir, tmp_path):
    """A zarr input takes the default model's decisions as a TIFF does: the gate hands
    phase contrast to ``cells`` (read whole when it is one block, with the same labels),
    and a plane larger than a block is planned from its centre (``lazy_plan``)."""
    zarr = pytest.importorskip("zarr")
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.pipeline import segment_zarr

    img = tifffile.imread(data_dir / "usiigaci" / "val" / "val_set46.tif")
    tifffile.imwrite(tmp_path / "p.tif", img)
    z = zarr.open_array(str(tmp_path / "p.zarr"), mode="w", shape=img.shape, chunks=(256, 256), dtype=img.dtype)
    z[:] = img
    assert run(tmp_path / "p.zarr", "-o", tmp_path / "out") == 0
    assert run(tmp_path / "p.tif", "-o", tmp_path / "out") == 0
    tiff = tifffile.imread(tmp_path / "out" / "p_labels.tif")
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "out" / "p_labels.zarr"), mode="r")[:], tiff)
    res = segment_zarr(Segmenter("generalist", precision="fp32", block=512), tmp_path / "p.zarr",
                       tmp_path / "big_labels.zarr", tmp_path / "big_cells.zarr")
    assert any("'cells' model" in n for n in res.notes), res.notes
    assert abs(res.n_cells - int(tiff.max())) <= 0.15 * int(tiff.max()), (res.n_cells, int(tiff.max()))


def test_a_zarr_handed_to_a_specialist_that_finds_nothing_is_given_back(data_dir, tmp_path, monkeypatch):
    """As for an image in memory: when the specialist the gate chose finds no cells, the
    default model segments the plane itself, and says so (``segment_zarr`` and
    ``Segmenter.segment_lazy`` alike)."""
    zarr = pytest.importorskip("zarr")
    from napari_unet.core.inference import Segmenter
    from napari_unet.core.pipeline import segment_zarr

    img = tifffile.imread(data_dir / "usiigaci" / "val" / "val_set46.tif")
    z = zarr.open_array(str(tmp_path / "p.zarr"), mode="w", shape=img.shape, chunks=(256, 256), dtype=img.dtype)
    z[:] = img
    seg = Segmenter("generalist", precision="fp32", block=512)
    cells = seg._specialist("cells")
    monkeypatch.setattr(cells, "segment_blocks", lambda plane, d=None, limits=None, progress=None, out=None: (0, out[1]))
    res = segment_zarr(seg, tmp_path / "p.zarr", tmp_path / "l.zarr", tmp_path / "c.zarr")
    assert any("'cells' model, to which the image looked suited, found no cells" in n for n in res.notes), res.notes
    assert res.n_cells > 0 and zarr.open_array(str(tmp_path / "l.zarr"), mode="r")[:].max() == res.n_cells
    lazy = seg.segment_lazy(z)
    assert any("found no cells: segmented with this one" in n for n in lazy.notes) and lazy.instances.any(), lazy.notes
