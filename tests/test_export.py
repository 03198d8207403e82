"""bioimage.io model packages: ``napari-unet export`` passes bioimageio.core's own test for
both weight formats, and ``napari-unet import`` brings the package back unchanged."""

import io
import zipfile

import numpy as np
import pytest
import torch
import yaml

from napari_unet.cli import main


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    """The shipped nuclei model exported once through the command line."""
    out = tmp_path_factory.mktemp("bioimageio") / "nuclei.zip"
    assert main(["export", "nuclei", "--output", str(out), "-q"]) == 0
    return out


def _rdf(path):
    with zipfile.ZipFile(path) as zf:
        return yaml.safe_load(zf.read("rdf.yaml")), set(zf.namelist())


def test_package_contents(package):
    rdf, names = _rdf(package)
    assert rdf["type"] == "model" and rdf["format_version"].startswith("0.5.")
    assert {"weights.pt", "weights_torchscript.pt", "napari_unet_architecture.py", "test_input.npy",
            "test_output.npy", "cover.png", "README.md"} <= names
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript"}
    assert rdf["license"] == "BSD-3-Clause"
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    inp, out = rdf["inputs"][0], rdf["outputs"][0]
    assert [a["type"] for a in inp["axes"]] == ["batch", "channel", "space", "space"]
    assert inp["axes"][2]["size"] == {"min": 8, "step": 8}  # 3 poolings
    scale = [p for p in inp["preprocessing"] if p["id"] == "scale_range"][0]["kwargs"]
    assert (scale["min_percentile"], scale["max_percentile"], scale["axes"]) == (1.0, 99.8, ["y", "x"])
    assert out["axes"][1]["channel_names"] == ["background", "interior", "boundary"]
    ours = rdf["config"]["napari_unet"]
    assert ours["format"] == "napari-unet/1" and ours["architecture"]["depth"] == 3
    assert ours["meta"]["diameter"] and ours["meta"]["seed_threshold"] == 0.9
    with zipfile.ZipFile(package) as zf:
        y = np.load(io.BytesIO(zf.read("test_output.npy")))
    assert y.shape == (1, 3, 256, 256)
    np.testing.assert_allclose(y.sum(axis=1), 1, atol=1e-5)  # probabilities


@pytest.mark.parametrize("weight_format", ["pytorch_state_dict", "torchscript"])
def test_bioimageio_core_test_passes(package, weight_format):
    from bioimageio.core import test_model

    summary = test_model(package, weight_format=weight_format, devices=["cpu"])
    failed = [(d.name, [e.msg for e in d.errors]) for d in summary.details if d.status == "failed"]
    assert summary.status == "passed", failed
    tested = [d.name for d in summary.details]
    assert any("Reproduce test outputs" in n for n in tested)
    assert sum("Run " + weight_format + " inference" in n for n in tested) == 6


def test_import_round_trip_predicts_the_same(package, capsys):
    from napari_unet._sample_data import load
    from napari_unet.core.bioimageio_import import import_package
    from napari_unet.core.models import list_models, load_model
    from napari_unet.core.normalize import normalize

    net, meta = import_package(package)
    original = load_model("nuclei")
    assert net.config == original.model.config and meta["seed_depth"] == original.meta["seed_depth"]
    x = torch.from_numpy(normalize(load("nuclei_bbbc039.tif")[:256, :320]))[None, None]
    with torch.no_grad():
        expected = original.model(x)
        torch.testing.assert_close(net(x), expected, rtol=1e-5, atol=1e-5)

    # the command line puts it into the user's model folder, under a new name
    assert main(["import", str(package)]) == 1  # 'nuclei' is a shipped model's name
    assert "shipped model" in capsys.readouterr().err
    assert main(["import", str(package), "--name", "nuclei from bioimageio"]) == 0
    assert "nuclei from bioimageio" in {m.name for m in list_models() if m.source == "user"}
    again = load_model("nuclei from bioimageio")
    assert again.diameter == original.diameter and again.normalization == original.normalization
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), expected, rtol=1e-5, atol=1e-5)
    assert main(["import", str(package), "--name", "nuclei from bioimageio"]) == 1  # exists


def test_import_refuses_other_packages(package, tmp_path):
    from napari_unet.core.bioimageio_import import import_package

    def repack(name, edit):
        out = tmp_path / name
        with zipfile.ZipFile(package) as src, zipfile.ZipFile(out, "w") as dst:
            for item in src.namelist():
                data = src.read(item)
                if item == "rdf.yaml":
                    data = yaml.safe_dump(edit(yaml.safe_load(data))).encode()
                dst.writestr(item, data)
        return out

    def foreign(r):  # a bioimage.io model of another tool
        r["config"] = {"other_tool": {"x": 1}}
        return r

    with pytest.raises(ValueError, match="not a napari-unet U-Net"):
        import_package(repack("foreign.zip", foreign))

    def other_net(r):
        r["config"]["napari_unet"]["architecture"]["base_channels"] = 32
        return r

    with pytest.raises(ValueError, match="does not hold a napari-unet U-Net"):
        import_package(repack("mismatch.zip", other_net))

    def escape(r):  # weights pointing outside the package
        r["weights"]["pytorch_state_dict"]["source"] = "../weights.pt"
        return r

    with pytest.raises(ValueError, match="not a file inside the package"):
        import_package(repack("escape.zip", escape))

    not_zip = tmp_path / "model.zip"
    not_zip.write_text("hello")
    with pytest.raises(ValueError, match="not a bioimage.io model package"):
        import_package(not_zip)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("readme.txt", "nothing")
    with pytest.raises(ValueError, match="no rdf.yaml"):
        import_package(empty)
    # weights that are a pickle with code in them are never unpickled
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.namelist():
            data = src.read(item)
            if item == "weights.pt":
                buf = io.BytesIO()
                torch.save({"x": Evil()}, buf)
                data = buf.getvalue()
            if item == "rdf.yaml":
                r = yaml.safe_load(data)
                r["weights"]["pytorch_state_dict"].pop("sha256")
                data = yaml.safe_dump(r).encode()
            dst.writestr(item, data)
    with pytest.raises(ValueError, match="cannot read the state_dict weights"):
        import_package(evil)
    assert main(["import", str(tmp_path / "foreign.zip")]) == 1


def test_export_never_overwrites_unless_asked(tmp_path, capsys):
    out = tmp_path / "model.zip"
    out.write_bytes(b"keep me")
    assert main(["export", "nuclei", "--output", str(out)]) == 1
    assert "exists" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert main(["export", "nuclei", "--output", str(tmp_path / "model.txt")]) == 1
    assert main(["export", "no such model", "--output", str(tmp_path / "x.zip")]) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name != "user-models"] == ["model.zip"]


def test_export_overwrite_small_unpadded_model(tmp_path):
    """--overwrite replaces the file atomically; an unpadded (valid) U-Net exports too."""
    from napari_unet.core.bioimageio import export_package
    from napari_unet.core.bioimageio_import import import_package
    from napari_unet.core.model import UNet, UNetConfig
    from napari_unet.core.models import save_model

    torch.manual_seed(0)
    net = UNet(UNetConfig(depth=2, base_channels=4, padding="valid", norm="none", out_channels=2)).eval()
    src = save_model(tmp_path / "tiny.pt", net, {"name": "tiny", "classes": ["background", "cell"]})
    out = tmp_path / "tiny.zip"
    out.write_bytes(b"old")
    with pytest.raises(ValueError, match="exists"):
        export_package(src, out)
    export_package(src, out, overwrite=True)
    assert zipfile.is_zipfile(out)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left
    rdf, _ = _rdf(out)
    assert rdf["inputs"][0]["axes"][2]["size"] == {"min": 44, "step": 4}
    assert rdf["outputs"][0]["axes"][2]["size"]["offset"] == -40
    back, _ = import_package(out)
    x = torch.rand(1, 1, 92, 92)
    with torch.no_grad():
        torch.testing.assert_close(back(x), net(x))
