"""Everyday use (issue 19): one line per bad file, shareable and resumable outputs, regions, headers and figures."""

import argparse
import csv
import os
import re
import shutil
import stat
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from matplotlib.backends.backend_agg import FigureCanvasAgg

import ccdseg.plots
from ccdseg.classes import COLORS, NAMES
from ccdseg.cli import build_parser, main
from ccdseg.errors import ConfigError, InputError
from ccdseg.io import read_images
from ccdseg.io.atomic import atomic_paths, recover_group
from ccdseg.io.regions import region_file_text
from ccdseg.pipeline import runners
from ccdseg.pipeline.batch import RUN_LOG, RunLog
from ccdseg.pipeline.job import output_paths, process_file, process_files, try_process_file
from ccdseg.pipeline.options import ProcessOptions


def _image(path, shape=(40, 60), seed=0, n_events=12, **header):
    """A noisy frame with ``n_events`` bright pixels (clusters for the classical method)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 3.0, shape)
    image[rng.integers(2, shape[0] - 2, n_events), rng.integers(2, shape[1] - 2, n_events)] += 400.0
    hdu = fits.PrimaryHDU(image.astype(np.float32))
    hdu.header.update(header)
    hdu.writeto(path)
    return path


def _damaged_copy(sample, path):
    """The DAMIC-M sample with 2000 random bytes in the middle of its second RICE-compressed CCD."""
    data = bytearray(sample.read_bytes())
    with fits.open(sample) as hdul:
        start = hdul[2].fileinfo()["datLoc"] + 60_000
    data[start:start + 2000] = np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def _leftovers(directory):
    """Temporary files and rename journals left in ``directory``."""
    return [p.name for p in directory.iterdir() if p.name.startswith(".")]


def _capture_figure(monkeypatch):
    """Make the plotting functions hand back their figure instead of writing it."""
    figures = []
    monkeypatch.setattr(ccdseg.plots, "_save", lambda fig, path, dpi=100: figures.append(fig) or path)
    return figures


# --- faults that lose work -------------------------------------------------------------------

def test_damaged_rice_tile_is_that_files_one_line(damicm_sample, tmp_path, capsys):
    damaged = _damaged_copy(damicm_sample, tmp_path / "damaged.fz")
    good = _image(tmp_path / "good.fits")
    before = damaged.read_bytes()
    results, failures = process_files([damaged, good], tmp_path / "out", method="classical", progress=False)
    assert [r.path for r in results] == [good]
    assert len(failures) == 1 and "\n" not in failures[0]
    assert re.fullmatch(rf"{re.escape(str(damaged))}: damaged data in HDU CCD_B \(CfitsioException: .+\)",
                        failures[0]), failures[0]
    assert damaged.read_bytes() == before
    # --debug: the same line, then the traceback; the batch still goes on
    code = main(["--debug", "predict", str(damaged), str(good), "--out-dir", str(tmp_path / "dbg"),
                 "--method", "classical", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith(f"ccdseg predict: error: {damaged}: damaged data in HDU CCD_B")
    assert "Traceback (most recent call last)" in err and "CfitsioException" in err
    assert (tmp_path / "dbg" / "good_seg.fits").exists()


def test_any_error_of_one_file_is_type_and_reason(tmp_path, monkeypatch):
    path = _image(tmp_path / "a.fits")

    def explode(*args, **kwargs):
        raise LookupError("no such table\nsecond line")
    monkeypatch.setattr(ccdseg.pipeline.job, "_process", explode)
    result, failure = try_process_file(path, tmp_path / "out", ProcessOptions(method="classical"))
    assert result is None and failure == f"{path}: LookupError: no such table"


def test_same_named_inputs_are_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "d1").mkdir()
    (tmp_path / "d2").mkdir()
    first = tmp_path / "d1" / "run.fits.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.ones((20, 30), np.float32))]).writeto(first)
    second = _image(tmp_path / "d2" / "run.fits")
    out = tmp_path / "out"
    code = main(["predict", str(first), str(second), "--out-dir", str(out), "--method", "classical",
                 "--no-progress", "--overwrite"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert f"{first} and {second}" in err[0] and "separate --out-dir" in err[0]
    assert not out.exists()
    # the same file given twice (overlapping globs) is segmented once
    results, failures = process_files([second, str(second), tmp_path / "d2" / ".." / "d2" / "run.fits"], out,
                                      method="classical", progress=False)
    assert len(results) == 1 and failures == []


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_follow_the_umask(umask, tmp_path):
    path = _image(tmp_path / "a.fits")
    old = os.umask(umask)
    try:
        result = process_file(path, tmp_path / "out", method="classical", find="cluster")
    finally:
        os.umask(old)
    assert len(result.outputs) == 7
    for output in result.outputs:
        assert stat.S_IMODE(output.stat().st_mode) == 0o666 & ~umask, output


def test_output_group_killed_between_renames_is_redone(tmp_path, monkeypatch):
    path = _image(tmp_path / "a.fits")
    out = tmp_path / "out"
    rename = ccdseg.io.atomic._rename

    calls = []

    def dies_after_first(temp, target):
        calls.extend([] if target.name.startswith(".") else [target])  # not the journal or a figure temporary
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a killed process: the journal stays, one output is in place
        rename(temp, target)
    monkeypatch.setattr(ccdseg.io.atomic, "_rename", dies_after_first)
    with pytest.raises(KeyboardInterrupt):
        process_file(path, out, method="classical")
    monkeypatch.setattr(ccdseg.io.atomic, "_rename", rename)
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == ["a_seg.fits"]
    assert any(name.endswith(".renaming") for name in _leftovers(out))
    result = process_file(path, out, method="classical")  # no --overwrite needed: the journal names its outputs
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in result.outputs)


def test_recover_group_leaves_other_files(tmp_path):
    targets = {"a": tmp_path / "x_a.txt", "b": tmp_path / "x_b.txt"}
    with atomic_paths(targets) as temps:
        for role, temp in temps.items():
            temp.write_text(role)
    (tmp_path / "mine.txt").write_text("keep")
    (tmp_path / ".ax_a.txt.123.tmp").write_text("another output's temporary file")
    for stale in (".x_a.txt.abc.tmp", "..x_a.txt.abc.tmp.def.tmp"):  # a killed writer's, a killed figure's
        (tmp_path / stale).write_text("half")
    assert recover_group(targets.values()) == []  # complete group: nothing to recover
    assert sorted(p.name for p in tmp_path.iterdir()) == [".ax_a.txt.123.tmp", "mine.txt", "x_a.txt", "x_b.txt"]


def test_cuda_without_cuda_is_a_clear_option_error(tiny_model, tmp_path, capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from ccdseg.infer.predict import get_model
    with pytest.raises(ConfigError, match="CUDA is not available on this machine"):
        get_model(tiny_model, device="cuda")
    with pytest.raises(ConfigError, match="device must be cpu, cuda or cuda:N, got 'gpu'"):
        get_model(tiny_model, device="gpu")
    path = _image(tmp_path / "a.fits")
    code = main(["predict", str(path), "--out-dir", str(tmp_path / "out"), "--device", "cuda", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "CUDA is not available" in err[0] and "corrupt" not in err[0]
    assert not (tmp_path / "out").exists()
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA")
    with pytest.raises(ConfigError, match="no CUDA provider"):  # never a silent run on the CPU
        get_model(tiny_model, device="cuda", engine="onnx")


def test_size_claimed_by_the_header_is_checked_before_reading(tmp_path):
    compressed = tmp_path / "huge.fz"
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(np.ones((16, 16), np.float32), name="CCD")]) \
        .writeto(compressed)
    data = bytearray(compressed.read_bytes())
    for key in (b"ZNAXIS1 =", b"ZNAXIS2 ="):
        start = data.index(key)
        data[start:start + 80] = f"{key.decode()[:8]}= {10**7:20d}".ljust(80).encode()
    compressed.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"huge.fz: HDU CCD is too large: the header claims 10000000 x 10000000 px, "
                                         r"363.8 TiB as float32"):
        read_images(compressed)
    plain = _image(tmp_path / "plain.fits", shape=(10, 10))
    data = bytearray(plain.read_bytes())
    start = data.index(b"NAXIS1  =")
    data[start:start + 80] = f"NAXIS1  = {100000:20d}".ljust(80).encode()
    plain.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"plain.fits: truncated file \(.*expected size \(4003200\)\)"):
        read_images(plain)


def test_skip_existing_resumes_an_interrupted_batch(tmp_path, monkeypatch, capsys):
    paths = [_image(tmp_path / f"f{n}.fits", seed=n) for n in range(4)]
    out = tmp_path / "out"
    job = ccdseg.pipeline.job._process
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return job(*args, **kwargs)
    monkeypatch.setattr(ccdseg.pipeline.job, "_process", interrupted)
    with pytest.raises(KeyboardInterrupt):
        process_files(paths, out, method="classical", progress=False)
    monkeypatch.setattr(ccdseg.pipeline.job, "_process", job)
    with open(out / RUN_LOG, "a") as log:
        log.write("2026-12-01T00:00:00,/a/partial/row")  # a run killed while writing its log
    assert set(RunLog(out).finished()) == {os.path.abspath(p) for p in paths[:2]}

    code = main(["predict", *map(str, paths), "--out-dir", str(out), "--method", "classical", "--no-progress",
                 "--skip-existing"])
    stdout = capsys.readouterr().out
    assert code == 0 and "2 of 4 file(s) segmented, 2 skipped as done in an earlier run" in stdout
    assert f"{paths[0]}: skipped, done in an earlier run" in stdout
    with open(out / RUN_LOG, newline="") as stream:
        rows = [row for row in csv.DictReader(stream) if row["status"]]
    assert [row["status"] for row in rows] == ["done", "done", "done", "done"]
    assert [row["path"] for row in rows] == [os.path.abspath(p) for p in paths]
    assert rows[0]["outputs"] == "f0_seg.fits;f0_clusters.csv;f0_summary.csv;f0.png;f0_spectrum.png;f0_clusters.reg"
    # an output removed since: that file is done again
    (out / "f1.png").unlink()
    results, _ = process_files(paths, out, method="classical", progress=False, skip_existing=True, overwrite=True)
    assert [r.skipped for r in results] == [True, True, True, False] and results[-1].path == paths[1]
    # outputs complete but never logged (a run killed before its client logged them): skipped too
    (out / RUN_LOG).unlink()
    results, failures = process_files(paths, out, method="classical", progress=False, skip_existing=True)
    assert failures == [] and [r.skipped for r in results] == [True] * 4
    assert set(RunLog(out).finished()) == {os.path.abspath(p) for p in paths}


# --- messages ---------------------------------------------------------------------------------

@pytest.mark.parametrize("option, message", [
    (["--find", "foo"], "find: unknown class 'foo'"),
    (["--gain", "0"], "gain"),
    (["--tile-size", "0"], "tile size must be a positive whole number of pixels, got 0"),
    (["--tile-size", "7"], "tile size 7 px is not a multiple of 4 px, as the model needs (it halves the tile 2 "
                           "times): use e.g. 4 or 8"),
])
def test_option_errors_once_before_any_work(option, message, tiny_model, tmp_path, capsys):
    paths = [_image(tmp_path / f"{n}.fits", seed=n) for n in range(3)]
    out = tmp_path / "m_bad"
    code = main(["predict", *map(str, paths), "--out-dir", str(out), "--model", str(tiny_model), "--no-progress",
                 *option])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and captured.err.startswith("ccdseg predict: error: ")
    assert message in captured.err and "tile_size" not in captured.err
    assert not out.exists()


def test_non_fits_error_has_no_astropy_hint(tmp_path):
    text = tmp_path / "notes.fits"
    text.write_text("run 42 gain 1.3\n" * 300)
    with pytest.raises(InputError) as error:
        read_images(text)
    assert str(error.value) == f"{text}: not a readable FITS file (No SIMPLE card found, this file does not " \
                               "appear to be a valid FITS file.)"


def test_find_lists_the_ten_largest_and_the_figure_says_so(tmp_path, capsys, monkeypatch):
    path = _image(tmp_path / "a.fits", shape=(80, 120), n_events=40)
    code = main(["predict", str(path), "--out-dir", str(tmp_path / "out"), "--method", "classical",
                 "--find", "cluster", "--no-progress"])
    stdout = capsys.readouterr().out
    count = int(re.search(r"(\d+) region\(s\) of class cluster; the 10 largest:", stdout).group(1))
    assert code == 0 and count > 20
    listed = re.findall(r"^ +\d+: rows \d+-\d+, columns \d+-\d+, (\d+) px$", stdout, re.MULTILINE)
    assert len(listed) == 10 and [int(n) for n in listed] == sorted((int(n) for n in listed), reverse=True)
    figures = _capture_figure(monkeypatch)
    process_file(path, tmp_path / "again", method="classical", find="cluster")
    stamps = figures[-1]
    assert stamps.get_suptitle() == f"the 16 largest of {count} cluster regions"


def test_derived_files_are_skipped_with_one_line(tmp_path, capsys):
    sims = tmp_path / "sims"
    sims.mkdir()
    image = _image(sims / "sim_00000.fits")
    shutil.copy(image, sims / "sim_00000_truth.fits")
    shutil.copy(image, sims / "old_seg.fits")
    code = main(["predict", *map(str, sorted(sims.iterdir())), "--out-dir", str(tmp_path / "out"),
                 "--method", "classical", "--no-progress"])
    stdout = capsys.readouterr().out.splitlines()
    assert code == 0
    assert stdout[0] == "skipping 2 file(s) named *_truth or *_seg (simulation truth or ccdseg outputs, not images)"
    assert stdout[-1].startswith("1 of 1 file(s) segmented")
    assert not (tmp_path / "out" / "sim_00000_truth_seg.fits").exists()


def test_help_texts():
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        text = sub.format_help()
        assert "%%" not in text and "%(" not in text, name
        for action in sub._actions:
            assert action.help, f"{name} {action.dest} has no help"
    assert "damicm" in subparsers.choices["demo"].format_help()


def test_demo_prints_the_class_shares_per_image(tmp_path, capsys, monkeypatch):
    import ccdseg.pipeline.demo

    path = _image(tmp_path / "a.fits")

    def quick_demo(out_dir, *args, **kwargs):
        results, failures = process_files([path], out_dir, method="classical", progress=False)
        return {"results": results, "failures": failures, "report": "report"}
    monkeypatch.setattr(ccdseg.pipeline.demo, "run_demo", quick_demo)
    assert main(["demo", "--out-dir", str(tmp_path / "demo"), "--size", "40", "60"]) == 0
    stdout = capsys.readouterr().out
    assert re.search(r"^  -?\w*: \d+ clusters, gain .*; background \d+\.\d\d %, glowing \d+\.\d\d %, "
                     r"hot pixel \d+\.\d\d %, cluster \d+\.\d\d %$", stdout, re.MULTILINE), stdout


# --- outputs ----------------------------------------------------------------------------------

def test_regions_per_hdu_coloured_by_flag_with_energy(tmp_path):
    table = Table({"id": [1, 2, 3, 4], "xmin": [0, 5, 9, 20], "xmax": [2, 6, 9, 22], "ymin": [3, 5, 9, 1],
                   "ymax": [4, 7, 9, 2], "energy_ev": [3770.0, 37.7, np.nan, 1.0e5],
                   "edge": [True, False, False, False], "near_hot": [False, True, False, False],
                   "near_glow": [True, False, False, False]})
    boxes = [line for line in region_file_text(table).splitlines() if line.startswith("box(")]
    assert boxes == ["box(2,4.5,3,2,0) # color=yellow text={3.77 keV}",
                     "box(6.5,7,2,3,0) # color=cyan text={0.0377 keV}",
                     "box(10,10,1,1,0) # color=green text={#3}",
                     "box(22,2.5,3,2,0) # color=green text={100 keV}"]

    multi = tmp_path / "multi.fits"
    rng = np.random.default_rng(1)
    hdus = [fits.PrimaryHDU()]
    for name in ("CCD_A", "CCD_B"):
        image = rng.normal(1000.0, 3.0, (40, 50))
        image[rng.integers(2, 38, 8), rng.integers(2, 48, 8)] += 400.0
        hdus.append(fits.ImageHDU(image.astype(np.float32), name=name))
    fits.HDUList(hdus).writeto(multi)
    out = tmp_path / "out"
    result = process_file(multi, out, method="classical", gain=10.0)
    assert sorted(p.name for p in result.outputs if p.suffix == ".reg") == \
        ["multi_clusters_CCD_A.reg", "multi_clusters_CCD_B.reg"]
    clusters = Table.read(out / "multi_clusters.csv")
    assert list(clusters["id"]) == list(range(1, len(clusters) + 1))  # unique over the file
    for name in ("CCD_A", "CCD_B"):
        rows = clusters[clusters["hdu"] == name]
        text = (out / f"multi_clusters_{name}.reg").read_text()
        assert len(rows) > 3 and text.count("box(") == len(rows)
        for row in rows:
            assert f"text={{{row['energy_ev'] / 1000:.3g} keV}}" in text
    single = process_file(_image(tmp_path / "one.fits"), out, method="classical")
    assert [p.name for p in single.outputs if p.suffix == ".reg"] == ["one_clusters.reg"]
    assert "text={#1}" in (out / "one_clusters.reg").read_text()  # no gain: the id


def test_output_headers(damicm_sample, tiny_model, tmp_path):
    process_file(damicm_sample, tmp_path, method="classical", hdu=2)
    with fits.open(tmp_path / "damicm_module_test_seg.fits") as seg:
        header = seg["LABELS"].header
        assert [header[f"CLASS{n}"] for n in range(4)] == list(NAMES)
        assert (header["CSHDU"], header["CSEXTN"]) == (2, "CCD_B")
        assert not [v for v in header["HISTORY"] if "CFITSIO" in v] if "HISTORY" in header else True
        columns = seg["CLUSTERS"].columns
        assert columns["charge_e"].unit == "electron" and columns["peak_e"].unit == "electron"
        assert columns["charge_adu"].unit == "adu" and columns["energy_ev"].unit == "eV"
    with fits.open(damicm_sample) as raw:
        assert any("CFITSIO" in v for v in raw[2].header["HISTORY"])  # was there to be left out
    path = _image(tmp_path / "p.fits")
    process_file(path, tmp_path / "out", model=tiny_model, probabilities=True, tile_size=32)
    with fits.open(tmp_path / "out" / "p_seg.fits") as seg:
        assert [seg["PROB"].header[f"PLANE{n + 1}"] for n in range(4)] == list(NAMES)
        assert (seg["LABELS"].header["CSHDU"], seg["LABELS"].header["CSEXTN"]) == (0, "")


def test_overview_of_a_strip_is_readable(tmp_path, monkeypatch):
    figures = _capture_figure(monkeypatch)
    rng = np.random.default_rng(2)
    image = rng.normal(1000.0, 3.0, (40, 5000))
    labels = np.zeros(image.shape, np.uint8)
    ccdseg.plots.plot_segmentation_panels([("HDU 0", image, labels)], tmp_path / "strip.png", title="strip")
    fig = figures[-1]
    FigureCanvasAgg(fig).draw()
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["HDU 0: image\n(blocks of 10x10, stretched)",
                                                 "HDU 0: segmentation"]
    image_ax, labels_ax = panels
    box, labels_box = image_ax.get_window_extent(), labels_ax.get_window_extent()
    assert box.y0 > labels_box.y1 - 1  # stacked: the image above its segmentation
    assert box.width / box.height < 13 and box.height > 60  # not a 4-px strip
    assert any(ax.get_ylabel() == "above row pedestal" for ax in fig.axes)  # the colour bar
    for axis in (image_ax.xaxis, image_ax.yaxis):
        assert 2 <= len([t for t in axis.get_ticklabels() if t.get_text()]) <= 7
    # a pipeline output titles an unnamed HDU "HDU 0"
    process_file(_image(tmp_path / "a.fits"), tmp_path / "out", method="classical")
    titles = [[ax.get_title() for ax in figure.axes if ax.get_title()] for figure in figures]
    assert ["HDU 0: image", "HDU 0: segmentation"] in titles  # the overview (the spectrum figure follows it)


def test_tile_progress_bar_for_a_single_frame(tiny_model, tmp_path, capsys):
    path = _image(tmp_path / "big.fits", shape=(100, 100))
    process_files([path], tmp_path / "out", model=tiny_model, tile_size=32, progress=True)
    err = capsys.readouterr().err
    assert re.search(r"tiles: 100%.* 16/16", err), err
    assert "file" not in err


def test_training_curves_use_the_class_colours(tmp_path, monkeypatch):
    figures = _capture_figure(monkeypatch)
    rows = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e,
             **{f"val_f1_{name.replace(' ', '_')}": 0.5 + 0.1 * e for name in NAMES}} for e in (1, 2, 3)]
    ccdseg.plots.plot_curves(rows, tmp_path / "curves.png")
    f1_axis = next(ax for ax in figures[-1].axes if ax.get_ylabel() == "F1")
    colours = {line.get_label(): line.get_color() for line in f1_axis.get_lines()}
    assert colours == {f"validation f1_{name.replace(' ', '_')}": colour for name, colour in zip(NAMES, COLORS,
                                                                                                 strict=True)}


def test_training_progress_names_the_classes(tmp_path, capfd):
    from ccdseg.nn.train import load_train_config, train
    from test_train import TINY

    config = load_train_config(TINY, ["epochs=1", "steps_per_epoch=2", "val_tiles=2", "test_tiles=2",
                                      "weight_tiles=2"], out=str(tmp_path / "t.pt"))
    train(config, progress=True)
    err = capfd.readouterr().err
    assert re.search(r"f1=background \d\.\d\d, glowing \d\.\d\d, hot pixel \d\.\d\d, cluster \d\.\d\d", err), err


# --- batches ----------------------------------------------------------------------------------

def _batch(root, n, damicm_sample):
    """``n`` tiny images in two folders, one damaged .fz file, and a same-named pair across the folders."""
    folders = [root / "d1", root / "d2"]
    for folder in folders:
        folder.mkdir()
    paths = [_image(folders[i % 2] / f"img{i:04d}.fits", shape=(16, 16), seed=i, n_events=2) for i in range(n - 3)]
    paths.append(_damaged_copy(damicm_sample, folders[0] / "damaged.fz"))
    paths.append(_image(folders[0] / "run.fits", shape=(16, 16), seed=n))
    paths.append(_image(folders[1] / "run.fits", shape=(16, 16), seed=n + 1))
    return paths


def _check_batch(paths, outs, code, stdout, err, good):
    assert code == 1
    assert err == [f"ccdseg predict: error: {paths[-3]}: damaged data in HDU CCD_B "
                   f"(CfitsioException: {err[0].split('CfitsioException: ')[1]}"]
    segmented = sum(int(re.search(r"^(\d+) of", line).group(1)) for line in stdout if " file(s) segmented" in line)
    assert segmented == good
    for out in outs:
        assert not _leftovers(out)
        for path in paths:
            seg = output_paths(path, out)["seg"]
            if seg.exists():
                with fits.open(seg, checksum=True) as hdul:
                    hdul.verify("exception")
                    assert hdul["LABELS"].data.shape == (16, 16)


def _run_batch(paths, tmp_path, capsys, *options):
    """The whole batch is refused (same-named pair); then each folder into its own output folder."""
    code = main(["predict", *map(str, paths), "--out-dir", str(tmp_path / "refused"), "--method", "classical",
                 "--no-progress", *options])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and f"{paths[-2]} and {paths[-1]}" in err[0]
    assert not (tmp_path / "refused").exists()
    codes, stdout, errors, outs = [], [], [], []
    for folder in ("d1", "d2"):
        outs.append(tmp_path / f"out_{folder}")
        codes.append(main(["predict", *(str(p) for p in paths if p.parent.name == folder), "--out-dir",
                           str(outs[-1]), "--method", "classical", "--no-progress", *options]))
        captured = capsys.readouterr()
        stdout += captured.out.splitlines()
        errors += captured.err.strip().splitlines()
    return max(codes), stdout, errors, outs


def test_batch_of_small_files_with_a_damaged_one_and_a_same_named_pair(damicm_sample, tmp_path, capsys):
    paths = _batch(tmp_path, 20, damicm_sample)
    code, stdout, err, outs = _run_batch(paths, tmp_path, capsys)
    _check_batch(paths, outs, code, stdout, err, good=19)


class _KillOnce:
    """A job that kills its own Dask worker process once, between two output renames of a file."""

    def __init__(self, job, marker):
        self.job, self.marker = job, marker

    def __call__(self, item):
        import ccdseg.io.atomic

        rename = ccdseg.io.atomic._rename

        def dies(temp, target):
            rename(temp, target)
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return
            os._exit(1)  # as kill -9: no cleanup, a half-renamed group of outputs
        ccdseg.io.atomic._rename = dies
        try:
            return self.job(item)
        finally:
            ccdseg.io.atomic._rename = rename


def _dask_batch(paths, out, marker):
    import functools

    import cloudpickle
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    job = functools.partial(try_process_file, out_dir=out, options=ProcessOptions(method="classical"))
    return runners.run_dask(_KillOnce(job, marker), paths, workers=2, progress=False)


def test_dask_worker_killed_mid_batch_costs_a_retry(tmp_path):
    pytest.importorskip("distributed")
    paths = [_image(tmp_path / f"img{n}.fits", shape=(16, 16), seed=n, n_events=2) for n in range(6)]
    out = tmp_path / "out"
    results, failures = _dask_batch(paths, out, tmp_path / "killed")
    assert (tmp_path / "killed").exists()  # a worker did die
    assert failures == [] and sorted(r.path for r in results) == paths
    assert not _leftovers(out)
    for path in paths:
        with fits.open(output_paths(path, out)["seg"], checksum=True) as hdul:
            hdul.verify("exception")
        assert all(p.exists() for p in output_paths(path, out).values())


@pytest.mark.slow
def test_batch_of_a_thousand_files_with_a_killed_worker(damicm_sample, tmp_path, capsys):
    pytest.importorskip("distributed")
    paths = _batch(tmp_path, 1000, damicm_sample)
    code, stdout, err, outs = _run_batch(paths, tmp_path, capsys, "--workers", "2")
    _check_batch(paths, outs, code, stdout, err, good=999)
    folder = [p for p in paths[:200] if p.parent.name == "d1"]
    results, failures = _dask_batch(folder, tmp_path / "killed_out", tmp_path / "killed")
    assert (tmp_path / "killed").exists() and failures == [] and len(results) == len(folder)
    assert not _leftovers(tmp_path / "killed_out")
