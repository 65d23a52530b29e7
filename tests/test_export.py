import json
import sys

import numpy as np
import pytest
import torch
from astropy.io import fits

from ccdseg.classes import N_CLASSES, NAMES
from ccdseg.cli import main
from ccdseg.errors import ConfigError, ModelFileError, OutputError
from ccdseg.infer.onnx import PREPROCESSING, export_onnx, load_onnx_model
from ccdseg.infer.predict import get_model, segment
from ccdseg.nn.model import load_model
from ccdseg.nn.normalize import normalize
from conftest import TINY_ARCH, save_tiny_model

onnx = pytest.importorskip("onnx")
onnxruntime = pytest.importorskip("onnxruntime")

NORMALIZATION = {"row_window": 9, "asinh_scale": 2.5}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    # sharper logits: all four classes appear, with clear margins between them
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt", sharpen=30, normalization=NORMALIZATION)


@pytest.fixture(scope="module")
def onnx_path(model_path):
    return export_onnx(model_path, model_path.with_suffix(".onnx"))


def _frame(shape, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 3.0, shape)
    image[rng.integers(0, shape[0], 40), rng.integers(0, shape[1], 40)] += rng.uniform(20, 500, 40)
    return image.astype(np.float32)


def test_onnx_file_carries_dynamic_axes_and_preprocessing(onnx_path):
    proto = onnx.load(onnx_path)
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["normalization"]) == NORMALIZATION
    assert json.loads(props["classes"]) == list(NAMES)
    assert json.loads(props["arch"])["depth"] == TINY_ARCH["depth"]
    assert props["preprocessing"] == PREPROCESSING and props["source_model"] == "tiny.pt"
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*proto.graph.input, *proto.graph.output)]
    assert dims == [["batch", 1, "height", "width"], ["batch", N_CLASSES, "height", "width"]]


def test_standalone_onnxruntime_reproduces_the_network(model_path, onnx_path):
    """A user with only onnxruntime and the metadata gets the network's probabilities."""
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    params = json.loads(session.get_modelmeta().custom_metadata_map["normalization"])
    net = load_model(model_path).net
    for shape in [(1, 32, 48), (3, 64, 64)]:  # batch, height, width all vary
        tiles = np.stack([normalize(_frame(shape[1:], seed), params) for seed in range(shape[0])])[:, None]
        probabilities = session.run(["probabilities"], {"image": tiles})[0]
        with torch.no_grad():
            expected = torch.softmax(net(torch.from_numpy(tiles)), dim=1).numpy()
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)


def test_onnx_engine_matches_torch_fp32(model_path, onnx_path):
    image = _frame((150, 230))
    labels, probabilities = segment(image, model_path, tile_size=64, precision="fp32")
    assert np.all(np.bincount(labels.ravel(), minlength=N_CLASSES) > 0)
    for model in (onnx_path, model_path):  # the .onnx file, and the .pt exported on the fly
        onnx_labels, onnx_probabilities = segment(image, model, tile_size=64, precision="fp32", engine="onnx")
        np.testing.assert_array_equal(onnx_labels, labels)
        np.testing.assert_allclose(onnx_probabilities, probabilities, atol=1e-4)
    assert get_model(onnx_path, engine="onnx") is get_model(str(onnx_path), engine="onnx")


def test_cli_export_then_predict_with_onnx(model_path, tmp_path, capsys):
    fits.PrimaryHDU(np.round(_frame((70, 90), seed=3)).astype(">i2")).writeto(tmp_path / "a.fits")
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_path), str(out)]) == 0
    assert main(["export", str(model_path), str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    for engine, model in (("onnx", out), ("torch", model_path)):
        assert main(["predict", str(tmp_path / "a.fits"), "--out-dir", str(tmp_path / engine), "--model",
                     str(model), "--engine", engine, "--precision", "fp32", "--no-progress"]) == 0
    with fits.open(tmp_path / "onnx" / "a_seg.fits") as a, fits.open(tmp_path / "torch" / "a_seg.fits") as b:
        assert a[0].header["CSENGINE"] == "onnx" and a[0].header["CSMODEL"] == "m.onnx"
        assert a[0].header["CSPREC"] == "fp32"
        np.testing.assert_array_equal(a["LABELS"].data, b["LABELS"].data)


def test_errors(model_path, onnx_path, tmp_path, monkeypatch):
    with pytest.raises(ModelFileError, match="only with engine 'onnx'"):
        segment(_frame((64, 64)), onnx_path)
    with pytest.raises(ConfigError, match="precision 'fp32'"):
        segment(_frame((64, 64)), onnx_path, engine="onnx")
    with pytest.raises(ConfigError, match="engine must be one of"):
        get_model(model_path, engine="tensorrt")
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x08\x07not a model")
    with pytest.raises(ModelFileError, match="garbage.onnx: not a readable ONNX file"):
        load_onnx_model(garbage)
    plain = tmp_path / "plain.onnx"
    value = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "plain", [value],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), plain)
    with pytest.raises(ModelFileError, match="plain.onnx: not a ccdseg ONNX model"):
        load_onnx_model(plain)
    with pytest.raises(OutputError, match="exists"):
        export_onnx(model_path, onnx_path)
    with pytest.raises(ModelFileError, match="missing.pt: no such file"):
        export_onnx(tmp_path / "missing.pt", tmp_path / "out.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the onnx extra were not installed
    with pytest.raises(ConfigError, match=r"need the onnxruntime package: pip install 'ccdseg\[onnx\]'"):
        load_onnx_model(onnx_path)
