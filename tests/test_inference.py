"""Segmenter on odd inputs (tiny random model) and on real data (shipped model)."""

import pickle

import numpy as np
import pytest
import tifffile

from napari_unet.core.inference import Segmenter, as_planes
from napari_unet.core.metrics import instance_scores, summarize
from napari_unet.core.models import install_model, list_models, load_model, save_model, user_dir


@pytest.mark.parametrize(
    "image,shape",
    [
        (np.zeros((3, 4), np.uint8), (3, 4)),
        (np.ones((1, 1), bool), (1, 1)),
        (np.arange(70 * 90, dtype=np.int32).reshape(70, 90), (70, 90)),
        (np.random.default_rng(0).random((2, 3, 40, 30)), (2, 3, 40, 30)),
        (np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8), (50, 60)),
    ],
)
def test_any_shape_and_dtype(tiny_model, image, shape):
    seg = Segmenter(str(tiny_model), tile=64)
    res = seg.segment(image)
    assert res.semantic.shape == shape and res.instances.shape == shape
    assert res.semantic.dtype == np.uint8 and res.instances.dtype in (np.uint16, np.uint32)


def test_planes_notes():
    planes, notes, shape = as_planes(np.zeros((5, 8, 9)))
    assert planes.shape == (5, 8, 9) and "5 2D planes" in notes[0] and shape == (5, 8, 9)
    with pytest.raises(ValueError):
        as_planes(np.zeros(5))
    with pytest.raises(ValueError):
        as_planes(np.array([["a"]]))


def test_model_files_are_loaded_safely(tmp_path, tiny_model):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"format": "napari-unet/1", "x": Evil()}, f)
    with pytest.raises(ValueError, match="cannot read"):
        load_model(evil)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(tiny_model.read_bytes()[:100])
    with pytest.raises(ValueError):
        load_model(trunc)
    # install into the (test-isolated) user folder; no temporary files are left behind
    dest = install_model(tiny_model, "my model")
    assert dest.parent == user_dir() and [p.name for p in user_dir().iterdir()] == ["my model.pt"]
    assert "my model" in [m.name for m in list_models()]
    with pytest.raises(FileExistsError):
        install_model(tiny_model, "my model")
    with pytest.raises(ValueError, match="invalid model name"):
        install_model(tiny_model, "../escape")


@pytest.mark.parametrize("block", [200, 256])  # halos too large to share (200), shared (256: bands)
def test_blockwise_equals_whole_on_real_image(data_dir, shipped_model, block, monkeypatch):
    import napari_unet.core.bands as bands

    calls = []
    rolling = bands.rolling_probabilities
    monkeypatch.setattr(bands, "rolling_probabilities", lambda *a, **k: calls.append(1) or rolling(*a, **k))
    img = tifffile.imread(data_dir / "bbbc039" / "val" / "IXMtest_A15_s5.tif")
    # a typed diameter: with none, the size check segments a plane this small whole
    whole = Segmenter(shipped_model).segment(img, diameter=22)
    blocks = Segmenter(shipped_model, block=block).segment(img, diameter=22)
    assert bool(calls) == (block == 256)
    np.testing.assert_array_equal(blocks.semantic, whole.semantic)
    r = summarize([instance_scores(blocks.instances, whole.instances)], thresholds=(0.5, 0.9))
    assert r["f1"] > 0.97


def test_rolling_blocks_with_a_halo_of_a_few_cells_give_the_same_labels(data_dir, shipped_model, monkeypatch):
    """On the rolling path the probabilities are exact whatever the halo, so a halo of
    ``ROLLING_HALO`` cell diameters (smaller than the network's) writes the same objects."""
    import napari_unet.core.blocks as blocks_mod
    import napari_unet.core.inference as inference

    img = np.tile(tifffile.imread(data_dir / "bbbc039" / "val" / "IXMtest_A15_s5.tif"), (2, 2))
    halos = []
    grid = blocks_mod.block_grid
    monkeypatch.setattr(blocks_mod, "block_grid", lambda h, w, size, halo: halos.append(halo) or grid(h, w, size, halo))
    seg = Segmenter(shipped_model, block=512)
    out = {}
    for rolling_halo in (0, inference.ROLLING_HALO):
        monkeypatch.setattr(inference, "ROLLING_HALO", rolling_halo)
        out[rolling_halo] = seg.segment(img, diameter=22).instances
    assert halos[-1] < halos[0]  # a smaller halo was used
    assert out[0].max() > 100
    np.testing.assert_array_equal(out[0], out[inference.ROLLING_HALO])


def test_rolling_blocks_of_a_model_without_a_cell_size(data_dir, shipped_model):
    """A model file that gives no diameter (one trained without ``--diameter``) keeps the
    network's halo on the rolling path and segments blockwise as whole."""
    from napari_unet.core.models import load_model

    img = tifffile.imread(data_dir / "bbbc039" / "val" / "IXMtest_A15_s5.tif")
    m = load_model(shipped_model)
    for key in ("diameter", "image_diameter", "default_diameter"):
        m.meta.pop(key, None)
    assert m.diameter is None
    blocks = Segmenter(m, block=256).segment(img).instances
    whole = Segmenter(m).segment(img).instances
    r = summarize([instance_scores(blocks, whole)], thresholds=(0.5,))
    assert whole.max() > 10 and r["f1"] > 0.97


def test_blockwise_labels_start_as_uint16_and_widen_when_the_cells_outnumber_them(data_dir, shipped_model):
    img = tifffile.imread(data_dir / "bbbc039" / "val" / "IXMtest_A15_s5.tif")
    seg = Segmenter(shipped_model, block=200)
    res = seg.segment_plane(img)  # larger than a block: through segment_blocks
    assert res.instances.dtype == np.uint16 and res.instances.max() > 10
    semantic, labels = np.zeros(img.shape, np.uint8), np.zeros(img.shape, np.uint16)
    n, out = seg.segment_blocks(img, out=(semantic, labels))
    assert out is labels and n == res.instances.max()  # written in place while the ids fit
    np.testing.assert_array_equal(out, res.instances)
    # a uint8 array holds 255 ids: three copies side by side have more cells than that
    wide = np.tile(img, (1, 3))
    assert 3 * n > 255
    n3, out3 = seg.segment_blocks(wide, out=(np.zeros(wide.shape, np.uint8), np.zeros(wide.shape, np.uint8)))
    assert out3.dtype == np.uint32 and n3 == out3.max() == len(np.unique(out3)) - 1 >= 3 * n - 10
    # as many cells as the plane segmented whole (copies that touch can join at the seams)
    assert abs(n3 - Segmenter(shipped_model).segment_plane(wide).instances.max()) <= 2


@pytest.mark.parametrize("block", [200, 256])  # each block predicts its halo (200), halos shared (256)
def test_lazy_plane_is_read_block_by_block(data_dir, shipped_model, block):
    """A dask- or zarr-backed plane (a napari layer on a huge file) is segmented from its
    blocks, never read whole, with the labels of the in-memory path."""
    import dask.array as da

    img = tifffile.imread(data_dir / "bbbc039" / "val" / "IXMtest_A15_s5.tif")
    whole = Segmenter(shipped_model, block=block).segment(img)
    reads = []

    def count(block):
        reads.append(block.size)
        return block

    lazy = da.from_array(img, chunks=100).map_blocks(count, dtype=img.dtype)
    res = Segmenter(shipped_model, block=block).segment_lazy(lazy)
    np.testing.assert_array_equal(res.semantic, whole.semantic)
    assert res.instances.max() == whole.instances.max()
    assert "block by block" in res.notes[0]
    assert max(reads) <= 100 * 100  # chunk by chunk: never the whole plane at once
    small = Segmenter(shipped_model).segment_lazy(da.from_array(img, chunks=256))  # fits a block: read whole
    np.testing.assert_array_equal(small.instances, Segmenter(shipped_model).segment(img).instances)


def test_large_uncompressed_tiff_is_segmented_from_disk_with_the_in_memory_labels(tmp_path, data_dir, shipped_model, monkeypatch):
    """``segment`` reads a 2D TIFF larger than a block piece by piece from disk (the frame
    is never in memory whole), uncompressed or compressed in strips, and writes the labels
    it gets in memory; a stack is read whole as before."""
    from napari_unet.core import batch, data, normalize

    monkeypatch.setattr(normalize, "_MAX_SAMPLES", 10_000)  # the limits from a subsample, as on a large frame
    img = np.tile(tifffile.imread(data_dir / "bbbc039" / "val" / "IXMtest_A15_s5.tif"), (1, 2))  # 520 x 1392
    tifffile.imwrite(tmp_path / "frame.tif", img)
    tifffile.imwrite(tmp_path / "packed.tif", img, compression="zlib")
    seg = Segmenter(shipped_model, block=256)
    whole = seg.segment(img)
    assert whole.instances.max() > 20
    plane = data.open_plane(tmp_path / "frame.tif")
    assert isinstance(plane, data.TiffPlane) and plane.shape == img.shape
    np.testing.assert_array_equal(plane[7:301:3, ::5], img[7:301:3, ::5])
    packed = data.open_plane(tmp_path / "packed.tif")  # zlib in strips: a zarr array over the file
    assert packed is not None and not isinstance(packed, np.ndarray)
    np.testing.assert_array_equal(packed[7:301:3, ::5], img[7:301:3, ::5])
    tifffile.imwrite(tmp_path / "stack.tif", np.stack([img, img]))
    assert data.open_plane(tmp_path / "stack.tif") is None
    assert data.open_plane(tmp_path / "packed.tif", larger_than=max(img.shape)) is None  # small: read whole
    reads = []
    read = data.TiffPlane.__getitem__
    monkeypatch.setattr(data.TiffPlane, "__getitem__", lambda self, key: reads.append(read(self, key)) or reads[-1])
    res = batch.segment_file(seg, tmp_path / "frame.tif", tmp_path / "out")
    assert len(reads) > 6 and max(r.size for r in reads) < img.size  # blocks, crops and a sample
    np.testing.assert_array_equal(res.instances, whole.instances)
    np.testing.assert_array_equal(res.semantic, whole.semantic)
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "out" / "frame_labels.tif"), whole.instances)
    packed = batch.segment_file(seg, tmp_path / "packed.tif", tmp_path / "out")
    np.testing.assert_array_equal(packed.instances, whole.instances)


def test_model_of_several_sizes_checks_the_diameter_by_default(tmp_path, data_dir, shipped_model):
    from scipy import ndimage as ndi

    base = load_model(shipped_model)
    path = save_model(tmp_path / "multi.pt", base.model, dict(base.meta, default_diameter="auto"))
    img = tifffile.imread(data_dir / "bbbc039" / "val" / "IXMtest_A15_s5.tif")[:256, :320]
    # BBBC039 nuclei (~28 px) fit the model trained on them: kept at its scale, and the
    # check's own pass is the answer (same labels as asking for the model's scale)
    seg = Segmenter(str(path)).segment(img)
    assert any("fit the model: not rescaled" in n for n in seg.notes), seg.notes
    assert seg.diameter == base.image_diameter
    own = Segmenter(str(path)).segment(img, diameter=base.image_diameter or base.diameter)
    np.testing.assert_array_equal(seg.instances, own.instances)
    # the same nuclei 2.5x larger (~70 px) are measured and rescaled
    big = ndi.zoom(img.astype(np.float32), 2.5, order=1)
    res = Segmenter(str(path)).segment(big)
    assert any(n.startswith("estimated cell diameter") for n in res.notes), res.notes
    assert 45 < res.diameter < 110
    fixed = Segmenter(str(path)).segment(img, diameter=28.0)
    assert fixed.diameter == 28.0 and not any("estimated" in n or "fit the model" in n for n in fixed.notes)


def test_threshold_and_min_size_override_the_model_and_reapply_without_the_network(data_dir, shipped_model):
    img = tifffile.imread(data_dir / "bbbc039" / "val" / "IXMtest_A15_s5.tif")[:256, :256]
    seg = Segmenter(shipped_model, keep_probs=True)
    own = seg.segment(img)
    assert own.probs is not None and own.probs.shape == (3, 256, 256)
    # the kept probabilities give the same labels again
    sem, inst = seg.postprocess(own.probs, own.diameter)
    np.testing.assert_array_equal(sem, own.semantic)
    np.testing.assert_array_equal(inst, own.instances)
    strict = Segmenter(shipped_model, threshold=0.95).segment(img)
    loose = Segmenter(shipped_model, threshold=0.05).segment(img)
    assert strict.semantic.sum() < own.semantic.sum() < loose.semantic.sum()
    assert strict.probs is None  # only kept when asked for
    sizes = np.bincount(own.instances.ravel())[1:]
    cut = int(np.median(sizes[sizes > 0]))
    seg.min_size = cut
    _, big = seg.postprocess(own.probs, own.diameter)
    kept = np.bincount(big.ravel())[1:]
    assert 0 < big.max() < own.instances.max() and kept[kept > 0].min() >= cut
    assert seg.settings().min_size == cut and seg.settings(own=True).min_size == Segmenter(shipped_model).settings().min_size
    for bad in ({"threshold": 1.0}, {"threshold": 0}, {"min_size": -3}):
        with pytest.raises(ValueError):
            Segmenter(shipped_model, **bad)


def test_colour_images_on_a_bright_background_go_to_the_colour_model(tmp_path, tiny_model):
    """A model naming a ``colour_model`` hands it stained tissue (colour, bright
    background), and only that: not a grayscale image, not colour fluorescence."""
    tiny = load_model(tiny_model)
    main = tmp_path / "main.pt"
    save_model(main, tiny.model, {**tiny.meta, "name": "main", "colour_model": str(tiny_model)})
    seg = Segmenter(str(main), precision="fp32")
    rng = np.random.default_rng(0)
    dark = rng.integers(0, 60, (64, 80, 3)).astype(np.uint8)  # fluorescence in colour
    dark[20:40, 20:40, 1] = 220
    stained = 255 - dark  # a bright background with dark objects
    routed = [n for n in seg.segment(stained).notes if "stained tissue in colour: segmented with the 'tiny' model" in n]
    assert routed, seg.segment(stained).notes
    for image in (dark, stained.mean(axis=-1)):
        assert not any("'tiny' model" in n for n in seg.segment(image).notes)
    # the specialist is loaded once and follows the user's overrides
    seg.threshold = 0.7
    assert seg.delegate_for(stained.min(axis=-1).astype(np.float32), colour=True).threshold == 0.7
    assert seg.delegate_for(stained.min(axis=-1).astype(np.float32), colour=True) is seg._specialist(str(tiny_model))


def test_a_gate_specialist_that_finds_nothing_gives_way(data_dir, monkeypatch):
    """The gate can be wrong (a dark nuclei image of dsb2018/val looked like phase contrast
    to the generalist's): when the specialist it picked finds no cell, the image is
    segmented by the model itself, and the note says so."""
    from napari_unet.core.inference import Segmentation

    img = tifffile.imread(sorted((data_dir / "bbbc039" / "val").glob("*[!s].tif"))[0])[:256, :256]
    seg = Segmenter("nuclei", precision="fp32")
    own = seg.segment(img)
    specialist = Segmenter("nuclei", precision="fp32")
    calls = []

    def nothing(image, *args, **kwargs):
        calls.append(image.shape)
        z = np.zeros(image.shape, np.uint16)
        return Segmentation(z.astype(np.uint8), z, [], None)

    monkeypatch.setattr(specialist, "segment", nothing)
    monkeypatch.setattr(seg, "delegate_for", lambda plane, colour=False, limits=None: specialist)
    res = seg.segment(img)
    assert calls == [img.shape] and own.instances.max() > 5
    np.testing.assert_array_equal(res.instances, own.instances)
    assert "found no cells: segmented with this one" in res.notes[0]
    # a specialist that finds cells keeps the image
    monkeypatch.setattr(specialist, "segment", lambda image, *a, **k: own)
    assert seg.segment(img).instances is own.instances


def test_probabilities_enlarged_back_match_skimage_inside_the_border():
    """predict_at_scale enlarges a shrunk image's probabilities with torch's bilinear: the
    same values as skimage's linear resize except on the outermost pixels."""
    from skimage.transform import resize

    from napari_unet.core.data import predict_at_scale, rescale_pair

    rng = np.random.default_rng(0)
    img = rng.random((300, 517), dtype=np.float32)

    def probs(x):
        return np.stack([x, 1 - x, x * x]).astype(np.float32)

    out = predict_at_scale(img, 0.5, probs)
    x, _ = rescale_pair(img, None, 0.5)
    ref = resize(probs(x), (3, 300, 517), order=1, preserve_range=True)
    assert out.shape == ref.shape and out.dtype == np.float32
    np.testing.assert_allclose(out[:, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=1e-4)
    assert np.abs(out - ref).max() < 0.25  # the border: extended, not mirrored
