"""Bad input and faults: every failure is one line naming the file and the cause, nothing is lost.

Odd but valid images are segmented; bad ones fail alone (the batch goes on, the exit code says
so); inputs are never modified; no half-written output or temporary file is left, not even
after a disk-full error or an interrupt.
"""

import errno
import os
import re
import warnings

import numpy as np
import pytest
import torch
from astropy.io import fits

import ccdseg.plots
from ccdseg.calib.gain import estimate_gain
from ccdseg.classes import BACKGROUND, N_CLASSES
from ccdseg.cli import main
from ccdseg.errors import ConfigError, InputError, ModelFileError
from ccdseg.infer.predict import segment
from ccdseg.nn.dataset import read_simulated_dir
from ccdseg.nn.train_config import load_train_config
from ccdseg.pipeline.batch import RUN_LOG
from ccdseg.pipeline.job import output_paths
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import simulate_image
from ccdseg.sim.truth import read_truth, truth_path, write_simulation


def _frame(shape, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 3.0, shape)
    image[rng.integers(0, shape[0], 5), rng.integers(0, shape[1], 5)] += 500.0
    return image


def _write(path, data, **header):
    hdu = fits.PrimaryHDU(data)
    hdu.header.update(header)
    hdu.writeto(path)
    return path


def _snapshot(paths):
    """Bytes and modification time of every input that exists (to prove they are never modified)."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in paths if p.is_file()}


def _leftovers(directory):
    """Temporary files (``.NAME.*.tmp``) left in ``directory``."""
    return [p.name for p in directory.iterdir() if p.name.startswith(".")] if directory.is_dir() else []


def _predict(capsys, inputs, out, model, *options):
    code = main(["predict", *map(str, inputs), "--out-dir", str(out), "--model", str(model), "--no-progress",
                 "--tile-size", "32", *options])
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


@pytest.fixture
def bad_inputs(tmp_path):
    """Files that cannot be segmented, with the cause each one-line error must name."""
    folder = tmp_path / "bad"
    folder.mkdir()
    empty = folder / "empty.fits"
    empty.write_bytes(b"")
    text = folder / "text.fits"
    text.write_text("run 42, gain 1.3\n" * 50)
    truncated = _write(folder / "truncated.fits", _frame((100, 100)).astype(np.float32))
    truncated.write_bytes(truncated.read_bytes()[:25_000])
    header_only = _write(folder / "header_only.fits", None, OBSERVER="nobody")
    line = _write(folder / "line.fits", np.arange(100, dtype=np.float32))
    cube = _write(folder / "cube.fits", np.zeros((3, 40, 40), dtype=np.float32))
    all_nan = _write(folder / "all_nan.fits", np.full((30, 40), np.nan, dtype=np.float32))
    return {folder / "missing.fits": "no such file", folder: "is a directory", empty: "empty file",
            text: "not a readable FITS file", truncated: "truncated file", header_only: "no 2-D image data",
            line: r"no 2-D image data \(HDU 0 has 1-D data\)", cube: r"no 2-D image data \(HDU 0 has 3-D data\)",
            all_nan: r"HDU 0 has no finite pixel \(all NaN or Inf\)"}


@pytest.fixture
def odd_inputs(tmp_path):
    """Unusual but valid images, by name."""
    folder = tmp_path / "odd"
    folder.mkdir()
    with_nan = _frame((40, 50), 1)
    with_nan[7] = np.nan                      # a row without a finite pixel
    with_nan[:, 3] = np.inf
    with_nan[20, 20] = -np.inf
    saturated = np.round(_frame((40, 50), 2) + 30_000).astype(np.uint16)
    saturated[10:13] = 65535
    multi = fits.HDUList([fits.PrimaryHDU()])
    for seed, name in enumerate(("CCD_A   ", "CCD_B ")):
        hdu = fits.CompImageHDU(np.round(_frame((36, 44), seed)).astype(np.int32), compression_type="RICE_1")
        hdu.header["EXTNAME"] = name
        multi.append(hdu)
    multi.writeto(folder / "multi.fits.fz")
    return {
        "nan": _write(folder / "nan.fits", with_nan.astype(np.float32)),
        "constant": _write(folder / "constant.fits", np.full((30, 40), 1234, dtype=np.int16)),
        "small": _write(folder / "small.fits", _frame((5, 7), 3).astype(np.float32)),
        "odd": _write(folder / "odd.fits", _frame((300, 517), 4).astype(np.float32)),
        "big_endian": _write(folder / "big_endian.fits", np.round(_frame((40, 50), 5)).astype(">i2")),
        "saturated": _write(folder / "saturated.fits", saturated),
        "multi": folder / "multi.fits.fz",
    }


def test_batch_of_bad_and_odd_files(bad_inputs, odd_inputs, tiny_model, tmp_path, capsys):
    inputs = [*bad_inputs, *odd_inputs.values()]
    before = _snapshot(inputs)
    out = tmp_path / "out"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # e.g. "All-NaN slice" of rows without finite pixels
        code, stdout, errors = _predict(capsys, inputs, out, tiny_model)

    assert code == 1
    assert len(errors) == len(bad_inputs) and not any("Traceback" in line for line in errors)
    for line, (path, cause) in zip(errors, bad_inputs.items(), strict=True):
        assert line.startswith(f"ccdseg predict: error: {path}: ")
        assert re.search(cause, line), line
    assert f"{len(odd_inputs)} of {len(inputs)} file(s) segmented" in stdout
    assert _snapshot(inputs) == before
    assert not _leftovers(out)

    for name, path in odd_inputs.items():
        labels = ["CCD_A", "CCD_B"] if name == "multi" else [""]
        assert all(p.exists() for p in output_paths(path, out, labels).values()), name
        with fits.open(output_paths(path, out)["seg"], checksum=True) as seg:
            images = [h for h in seg if h.name.startswith("LABELS")]
            with fits.open(path) as raw:
                shapes = [h.data.shape for h in raw if h.data is not None]
            assert [h.data.shape for h in images] == shapes, name
            for hdu in images:
                assert hdu.data.dtype == np.uint8 and hdu.data.max() < N_CLASSES
    with fits.open(output_paths(odd_inputs["multi"], out)["seg"]) as seg:
        assert [h.name for h in seg][1:3] == ["LABELS_CCD_A", "LABELS_CCD_B"]  # trailing spaces gone
        assert set(seg["CLUSTERS"].data["hdu"]) <= {"CCD_A", "CCD_B"}
    with fits.open(output_paths(odd_inputs["nan"], out)["seg"]) as seg:
        labels = seg["LABELS"].data
        assert np.all(labels[7] == BACKGROUND) and np.all(labels[:, 3] == BACKGROUND)
        assert labels[20, 20] == BACKGROUND
    # integer data: the 1 ADU quantisation is no single-electron comb, so no gain is made up
    with fits.open(output_paths(odd_inputs["big_endian"], out)["seg"]) as seg:
        assert seg["LABELS"].header["GAINSRC"] == "none" and "GAINUSED" not in seg["LABELS"].header


def test_integer_data_gain():
    rng = np.random.default_rng(7)
    assert estimate_gain(np.round(rng.normal(1000.0, 3.0, (300, 300)))) is None
    assert estimate_gain(np.round(rng.normal(1000.0, 1.0, (300, 300)))) is None
    # an integer skipper image (10 ADU/e-, 0.15 e- noise) still gives its gain, not the 1 ADU quantisation
    electrons = rng.poisson(0.5, (300, 600)) + rng.normal(0.0, 0.15, (300, 600))
    assert estimate_gain(np.round(electrons * 10.0 - 38.3)).value == pytest.approx(10.0, rel=0.01)


@pytest.mark.parametrize("kind, cause", [
    ("garbage", "not a readable PyTorch file"),
    ("fits", "not a readable PyTorch file"),
    ("dict", "not a ccdseg model file"),
    ("missing", "no such file"),
])
def test_bad_model_file(kind, cause, tmp_path, capsys):
    image = _write(tmp_path / "a.fits", _frame((20, 20)).astype(np.float32))
    model = tmp_path / "model.pt"
    if kind == "garbage":
        model.write_bytes(os.urandom(3000))
    elif kind == "fits":
        _write(model, np.zeros((4, 4), dtype=np.float32))
    elif kind == "dict":
        torch.save({"weights": torch.zeros(3)}, model)
    code, _, errors = _predict(capsys, [image], tmp_path / "out", model)
    assert code == 2
    assert errors == [f"ccdseg predict: error: {model}: {cause}" + errors[0].split(cause, 1)[1]]
    assert not (tmp_path / "out").exists()
    if kind == "garbage":
        with pytest.raises(ModelFileError):  # --debug: the exception itself, with its traceback
            main(["--debug", "predict", str(image), "--out-dir", str(tmp_path / "out"), "--model", str(model)])


def test_output_directory_not_writable(tiny_model, tmp_path, capsys):
    images = [_write(tmp_path / f"{n}.fits", _frame((20, 30), n).astype(np.float32)) for n in range(2)]
    blocker = tmp_path / "results"
    blocker.write_text("a file where the output directory should be")
    code, _, errors = _predict(capsys, images, blocker / "run1", tiny_model)
    assert code == 1
    assert errors == [f"ccdseg predict: error: {image}: {blocker / 'run1' / (image.stem + '_seg.fits')}: "
                      f"cannot write ({blocker} is not a directory)" for image in images]
    assert blocker.read_text() == "a file where the output directory should be"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write into a read-only directory")
def test_read_only_output_directory(tiny_model, tmp_path, capsys):
    image = _write(tmp_path / "a.fits", _frame((20, 30)).astype(np.float32))
    out = tmp_path / "out"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, errors = _predict(capsys, [image], out, tiny_model)
    finally:
        out.chmod(0o755)
    assert code == 1 and len(errors) == 1 and "cannot write (Permission denied)" in errors[0]
    assert not list(out.iterdir())


def test_existing_output_is_kept_without_overwrite(tiny_model, tmp_path, capsys):
    a, b = (_write(tmp_path / f"{n}.fits", _frame((20, 30), i).astype(np.float32)) for i, n in enumerate("ab"))
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"not mine to replace")
    code, stdout, errors = _predict(capsys, [a, b], out, tiny_model)
    assert code == 1
    assert errors == [f"ccdseg predict: error: {a}: {out / 'a.png'}: exists (use --overwrite to replace it)"]
    assert sorted(p.name for p in out.iterdir() if p.name != RUN_LOG) == \
        sorted(["a.png", *(p.name for p in output_paths(b, out).values())])
    assert (out / "a.png").read_bytes() == b"not mine to replace"
    assert _predict(capsys, [a], out, tiny_model, "--overwrite")[0] == 0
    assert (out / "a.png").read_bytes().startswith(b"\x89PNG")


def _disk_full(after=0):
    """``HDUList.writeto`` that writes half a file and then fails as on a full disk, after ``after`` good calls."""
    original = fits.HDUList.writeto
    calls = []

    def writeto(self, target, *args, **kwargs):
        calls.append(target)
        if len(calls) <= after:
            return original(self, target, *args, **kwargs)
        with open(target, "wb") as stream:
            stream.write(b"SIMPLE  =                    T" + b" " * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(target))
    return writeto


def test_disk_full_while_predicting(tiny_model, tmp_path, capsys, monkeypatch):
    images = [_write(tmp_path / f"{n}.fits", _frame((20, 30), n).astype(np.float32)) for n in range(2)]
    out = tmp_path / "out"
    monkeypatch.setattr(fits.HDUList, "writeto", _disk_full(after=1))
    code, stdout, errors = _predict(capsys, images, out, tiny_model)
    assert code == 1
    assert len(errors) == 1 and errors[0].startswith(f"ccdseg predict: error: {images[1]}: ")
    assert errors[0].endswith("cannot write (No space left on device)")
    assert sorted(p.name for p in out.iterdir() if p.name != RUN_LOG) == \
        sorted(p.name for p in output_paths(images[0], out).values())


def test_disk_full_on_rename_leaves_nothing(tiny_model, tmp_path, capsys, monkeypatch):
    image = _write(tmp_path / "a.fits", _frame((20, 30)).astype(np.float32))
    out = tmp_path / "out"

    def replace(source, target):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "replace", replace)
    code, _, errors = _predict(capsys, [image], out, tiny_model)
    assert code == 1 and len(errors) == 1 and "No space left on device" in errors[0]
    assert [p.name for p in out.iterdir()] == [RUN_LOG]  # the file is logged as failed, no output is left
    assert "failed" in (out / RUN_LOG).read_text()


def test_interrupt_leaves_complete_files_only(tiny_model, tmp_path, capsys, monkeypatch):
    images = [_write(tmp_path / f"{n}.fits", _frame((20, 30), n).astype(np.float32)) for n in range(3)]
    before = _snapshot(images)
    out = tmp_path / "out"
    draw = ccdseg.plots.plot_segmentation_panels
    calls = []

    def interrupted(*args, **kwargs):
        # the 2nd file is interrupted with its FITS, CSV and region outputs already written to temporary files
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return draw(*args, **kwargs)
    monkeypatch.setattr(ccdseg.plots, "plot_segmentation_panels", interrupted)
    code, _, errors = _predict(capsys, images, out, tiny_model)
    assert code == 130 and errors[-1] == "ccdseg predict: interrupted"
    assert sorted(p.name for p in out.iterdir() if p.name != RUN_LOG) == \
        sorted(p.name for p in output_paths(images[0], out).values())
    with fits.open(output_paths(images[0], out)["seg"], checksum=True) as seg:
        seg.verify("exception")
        assert seg["LABELS"].data.shape == (20, 30)
    assert _snapshot(images) == before


# --- simulate, training configuration, truth files ------------------------------------------


@pytest.mark.parametrize("options, message", [
    (["--set", "detector.gain_adu_per_e=-1"], "detector.gain_adu_per_e = -1.0: must be > 0"),
    (["--set", "detector.colour=blue"], "unknown config key detector.colour"),
    (["--set", "detector.n_samples=many"], "detector.n_samples must be an integer, got 'many'"),
    (["--set", "nonsense"], "override 'nonsense' is not of the form key=value"),
    (["--preset", "lsst"], "unknown preset 'lsst'"),
    (["--n", "0"], "--n = 0: must be >= 1"),
])
def test_simulate_bad_config(options, message, tmp_path, capsys):
    assert main(["simulate", str(tmp_path / "sim"), "--n", "1", "--size", "32", "32", *options]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"ccdseg simulate: error: {message}")
    assert not (tmp_path / "sim").exists()


def test_simulate_bad_config_file(tmp_path, capsys):
    config = tmp_path / "bad.toml"
    config.write_text("[detector]\ngain_adu_per_e = \n")
    assert main(["simulate", str(tmp_path / "sim"), "--config", str(config)]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith(f"ccdseg simulate: error: {config}: invalid TOML")


def test_simulate_disk_full(tmp_path, capsys, monkeypatch):
    out = tmp_path / "sim"
    monkeypatch.setattr(fits.HDUList, "writeto", _disk_full(after=3))  # the 2nd image's truth fails
    assert main(["simulate", str(out), "--n", "3", "--size", "32", "32"]) == 2
    stderr = capsys.readouterr().err
    errors = [line for line in stderr.splitlines() if line.startswith("ccdseg")]  # not the progress bar
    truth = out / "sim_00001_truth.fits"
    assert "Traceback" not in stderr
    assert errors == [f"ccdseg simulate: error: {truth}: cannot write (No space left on device)"]
    # the first image and its truth are complete; of the second neither its image nor its truth is left
    assert sorted(p.name for p in out.iterdir()) == ["sim_00000.fits", "sim_00000_truth.fits"]
    monkeypatch.undo()
    assert read_truth(out / "sim_00000.fits")[0].shape == (32, 32)


def test_truth_that_does_not_match(tmp_path):
    config = load_config("damic", overrides=["detector.height=32", "detector.width=32"])
    image = tmp_path / "a.fits"
    write_simulation(simulate_image(config, seed=1), image)
    fits.PrimaryHDU(np.zeros((4, 4))).writeto(truth_path(image), overwrite=True)
    with pytest.raises(InputError, match=r"a_truth\.fits: not a truth file: no LABELS, IDS, TRUTH extension"):
        read_truth(image)
    truth_path(image).unlink()
    with pytest.raises(InputError, match=r"a_truth\.fits: no such file"):
        read_truth(image)
    other = simulate_image(load_config("damic", overrides=["detector.height=32", "detector.width=48"]), seed=2)
    write_simulation(other, tmp_path / "b.fits")
    truth_path(image).write_bytes(truth_path(tmp_path / "b.fits").read_bytes())
    with pytest.raises(InputError, match=r"a_truth\.fits: truth shape \(32, 48\) does not match the image shape "
                                         r"\(32, 32\) of a\.fits"):
        read_simulated_dir(tmp_path)


@pytest.mark.parametrize("override, message", [
    ("colour=blue", "unknown training config key 'colour'"),
    ("lr=-0.1", "lr = -0.1: must be > 0"),
    ("tile_size=100", "tile_size = 100: must be a multiple of 2**depth"),
    ("epochs=two", "epochs must be of type int, got 'two'"),
    ("optimizer=sgd", "optimizer = 'sgd': must be one of adamw, adadelta"),
])
def test_train_bad_config(override, message):
    with pytest.raises(ConfigError) as raised:
        load_train_config(overrides=[override])
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_segment_rejects_what_is_not_an_image(tiny_model):
    for image in (np.zeros((3, 4, 5)), np.zeros(7), np.zeros((0, 4))):
        with pytest.raises(ConfigError, match=rf"non-empty 2-D array, got shape {re.escape(str(image.shape))}"):
            segment(image, model=tiny_model)
