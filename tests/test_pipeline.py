import argparse
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from ccdseg.calib.amplifiers import find_segments
from ccdseg.calib.background import row_pedestal
from ccdseg.calib.baseline import subtract_zero
from ccdseg.classes import BACKGROUND, CLUSTER
from ccdseg.cli import predict as cli_predict
from ccdseg.errors import ConfigError, OutputError
from ccdseg.measure.catalog import CATALOG_COLUMNS
from ccdseg.pipeline.job import output_paths, process_file, process_files


def _write_image(path, shape=(70, 90), seed=0, dtype=">i2", **header):
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 3.0, shape)
    image[rng.integers(0, shape[0], 30), rng.integers(0, shape[1], 30)] += rng.uniform(50, 2000, 30)
    hdu = fits.PrimaryHDU(np.round(image).astype(dtype))
    for key, value in header.items():
        hdu.header[key] = value
    hdu.writeto(path)
    return path


def _check_charge_totals(image, labels, clusters):
    # the pipeline's zero: the per-row pedestal, and a column baseline where one is significant (the bundled
    # sample's column 0 reads +2-3 e- high)
    zeroed, _, baselines = subtract_zero(image, find_segments(image, gain=False))
    residual = image - row_pedestal(image)[:, None] if baselines[0] is None else zeroed
    components, n = ndimage.label(labels == CLUSTER, structure=np.ones((3, 3)))
    charges = ndimage.sum(residual, components, np.arange(1, n + 1))
    # components without positive charge are no clusters; a component holding several events is split into
    # rows (ccdseg.measure.split), which share its charge
    assert len(clusters) >= np.count_nonzero(charges > 0)
    assert clusters["charge_adu"].sum() == pytest.approx(charges[charges > 0].sum(), rel=1e-4)


def test_damicm_sample_end_to_end(damicm_sample, tiny_model, tmp_path):
    result = process_file(damicm_sample, tmp_path, model=tiny_model)
    stem = "damicm_module_test"
    names = ["CCD_A", "CCD_B", "CCD_D", "CCD_C"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{stem}_seg.fits", f"{stem}_clusters.csv", f"{stem}.png", f"{stem}_summary.csv", f"{stem}_spectrum.png",
         *(f"{stem}_clusters_{n}.reg" for n in names)])
    with fits.open(damicm_sample) as raw, fits.open(tmp_path / f"{stem}_seg.fits") as seg:
        assert [h.name for h in seg] == ["PRIMARY", *(f"LABELS_{n}" for n in names), "CLUSTERS",
                                         *(f"MASK_{n}" for n in names), "SUMMARY"]
        assert seg[0].data is None
        assert seg[0].header["PRESCAN"] == 8 and seg[0].header["NDCM"] == 500  # input primary keys
        assert seg[0].header["CSMODEL"] == "tiny.pt" and seg[0].header["CSMETHOD"] == "network"
        assert seg[0].header["CSCLTHR"] == "argmax"
        assert seg[0].header["CCDSEGV"]
        clusters = Table.read(seg["CLUSTERS"])
        assert clusters.colnames == [*CATALOG_COLUMNS, "low_energy"]  # low-energy events: ccdseg.measure.summary
        assert set(clusters["hdu"]) <= set(names)
        for name in names:
            labels = seg[f"LABELS_{name}"].data
            assert labels.shape == (320, 640) and labels.dtype == np.uint8 and labels.max() <= 3
            header = seg[f"LABELS_{name}"].header
            assert header["GAINSRC"] == "estimated" and 1.25 < header["GAINUSED"] < 1.45
            image = raw[name].data.astype(np.float32).astype(np.float64)  # ccdseg reads float32
            rows = clusters[clusters["hdu"] == name]
            assert len(rows) == result.images[names.index(name)].n_clusters
            _check_charge_totals(image, labels, rows)
            np.testing.assert_allclose(rows["charge_e"], rows["charge_adu"] / header["GAINUSED"])
    csv = Table.read(tmp_path / f"{stem}_clusters.csv", format="ascii.csv")
    assert csv.colnames == clusters.colnames and len(csv) == len(clusters)
    np.testing.assert_allclose(csv["charge_adu"], clusters["charge_adu"], rtol=1e-12)
    for name in names:  # one region file per CCD, to load on that CCD
        region = (tmp_path / f"{stem}_clusters_{name}.reg").read_text().splitlines()
        assert region[0].startswith("# Region file format: DS9")
        boxes = [line for line in region if line.startswith("box(")]
        assert len(boxes) == np.sum(clusters["hdu"] == name)
        ids = clusters["id"][clusters["hdu"] == name]
        assert all(box.endswith(f"text={{{energy / 1000:.3g} keV}}") for box, energy
                   in zip(boxes, clusters["energy_ev"][clusters["hdu"] == name], strict=True)), ids
    assert list(clusters["id"]) == list(range(1, len(clusters) + 1))  # unique over the file
    assert (tmp_path / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [image.hdu for image in result.images] == names


def test_single_image_contract(tiny_model, tmp_path):
    path = _write_image(tmp_path / "run7.fits.gz", GAIN=2.5, OBSERVER="me")
    result = process_file(path, tmp_path / "out", model=tiny_model, probabilities=True, find="cluster",
                          diffusion=(530, 8.86e-4))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["run7_seg.fits", "run7_clusters.csv", "run7_clusters.reg", "run7.png", "run7_find_cluster.png",
         "run7_summary.csv", "run7_spectrum.png"])
    with fits.open(out / "run7_seg.fits") as seg:
        assert [h.name for h in seg] == ["PRIMARY", "LABELS", "PROB", "CLUSTERS", "MASK", "SUMMARY"]
        assert seg["LABELS"].header["OBSERVER"] == "me" and seg["LABELS"].header["GAIN"] == 2.5
        assert seg["LABELS"].header["GAINSRC"] == "header" and seg["LABELS"].header["GAINUSED"] == 2.5
        probabilities = seg["PROB"].data
        assert probabilities.shape == (4, 70, 90) and probabilities.dtype == np.dtype(">f4")
        np.testing.assert_array_equal(seg["LABELS"].data, np.argmax(probabilities, axis=0))
        clusters = Table.read(seg["CLUSTERS"])
        assert (seg["CLUSTERS"].header["DIFFA"], seg["CLUSTERS"].header["DIFFB"]) == (530.0, 8.86e-4)
        assert set(clusters["hdu"]) <= {"0"}
        np.testing.assert_allclose(clusters["charge_e"], clusters["charge_adu"] / 2.5)
        labels = seg["LABELS"].data
        _check_charge_totals(fits.getdata(path).astype(np.float64), labels, clusters)
    image_result = result.images[0]
    assert image_result.sections and all(s.npix >= 1 for s in image_result.sections)
    assert sum(s.npix for s in image_result.sections) == np.sum(labels == CLUSTER)


def test_gain_option_wins_and_unknown_gain_gives_nan(tiny_model, tmp_path):
    with_gain = _write_image(tmp_path / "a.fits", GAIN=2.5)
    result = process_file(with_gain, tmp_path / "out", model=tiny_model, gain=4.0)
    assert (result.images[0].gain, result.images[0].gain_source) == (4.0, "option")
    plain = _write_image(tmp_path / "b.fits", dtype=np.float32)
    result = process_file(plain, tmp_path / "out", model=tiny_model)
    assert (result.images[0].gain, result.images[0].gain_source) == (None, "none")
    clusters = Table.read(tmp_path / "out" / "b_clusters.csv")
    assert len(clusters) == result.images[0].n_clusters and np.all(np.isnan(clusters["charge_e"]))


def test_datasec_and_non_finite_pixels_are_background(tiny_model, tmp_path):
    image = np.random.default_rng(3).normal(500.0, 2.0, (40, 60)).astype(np.float32)
    image[5, 20] = np.nan
    hdu = fits.ImageHDU(image, name="AMP1")
    hdu.header["DATASEC"] = "[9:60,1:38]"
    fits.HDUList([fits.PrimaryHDU(), hdu, fits.ImageHDU(image, name="AMP2")]).writeto(tmp_path / "x.fits")
    process_file(tmp_path / "x.fits", tmp_path / "out", model=tiny_model, hdu="AMP1")
    with fits.open(tmp_path / "out" / "x_seg.fits") as seg:
        assert [h.name for h in seg] == ["PRIMARY", "LABELS", "CLUSTERS", "MASK", "SUMMARY"]
        labels = seg["LABELS"].data
    assert np.all(labels[:, :8] == BACKGROUND) and np.all(labels[38:] == BACKGROUND)
    assert labels[5, 20] == BACKGROUND
    hdu.header["DATASEC"] = "[9:99,1:38]"
    hdu.writeto(tmp_path / "y.fits")
    with pytest.raises(ConfigError, match="DATASEC"):
        process_file(tmp_path / "y.fits", tmp_path / "out", model=tiny_model)


def test_existing_output_fails_that_file_only(tiny_model, tmp_path):
    a, b = _write_image(tmp_path / "a.fits"), _write_image(tmp_path / "b.fits", seed=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a_clusters.csv").write_text("keep me")
    results, failures = process_files([a, b], out, model=tiny_model, progress=False)
    assert [r.path for r in results] == [b]
    assert len(failures) == 1 and failures[0].startswith(f"{a}: ") and "a_clusters.csv" in failures[0]
    assert "--overwrite" in failures[0]
    assert not (out / "a_seg.fits").exists() and (out / "a_clusters.csv").read_text() == "keep me"
    assert all(p.exists() for p in output_paths(b, out).values())
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    with pytest.raises(OutputError):
        process_file(b, out, model=tiny_model)
    process_file(a, out, model=tiny_model, overwrite=True)
    assert (out / "a_clusters.csv").read_text().startswith("id,hdu,")


def test_bad_files_do_not_stop_the_others(tiny_model, tmp_path):
    good = _write_image(tmp_path / "good.fits")
    bad = tmp_path / "bad.fits"
    bad.write_text("SIMPLE  = not really a FITS file")
    cube = tmp_path / "cube.fits"
    fits.PrimaryHDU(np.zeros((2, 3, 4), dtype=np.float32)).writeto(cube)
    results, failures = process_files([bad, good, tmp_path / "missing.fits", cube], tmp_path / "out",
                                      model=tiny_model, progress=False)
    assert [r.path for r in results] == [good]
    assert [f.split(": ")[0] for f in failures] == [str(bad), str(tmp_path / "missing.fits"), str(cube)]
    assert all("\n" not in f for f in failures)


def test_classical_method_needs_no_torch(tmp_path):
    path = _write_image(tmp_path / "c.fits")
    code = ("import sys; from ccdseg.pipeline.job import process_file; "
            f"r = process_file({str(path)!r}, {str(tmp_path / 'out')!r}, method='classical'); "
            "assert 'torch' not in sys.modules; print(r.images[0].n_clusters)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with fits.open(tmp_path / "out" / "c_seg.fits") as seg:
        assert seg[0].header["CSMETHOD"] == "classical" and seg[0].header["CSMODEL"] == "none"
        assert len(seg["CLUSTERS"].data) == int(done.stdout)
    with pytest.raises(ConfigError, match="probabilities"):
        process_file(path, tmp_path / "out2", method="classical", probabilities=True)
    with pytest.raises(ConfigError, match="cluster_threshold"):
        process_file(path, tmp_path / "out2", method="classical", cluster_threshold=0.1)
    for law in ((530.0,), (530.0, -1e-3), (np.nan, 1e-3), ("a", "b")):
        with pytest.raises(ConfigError, match="diffusion must be two positive numbers"):
            process_file(path, tmp_path / "out2", method="classical", diffusion=law)


def _cli(argv):
    parser = argparse.ArgumentParser()
    cli_predict.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli(tiny_model, tmp_path, capsys):
    good = _write_image(tmp_path / "good.fits")
    out = tmp_path / "out"
    code = _cli(["predict", str(good), str(tmp_path / "nope.fits"), "--out-dir", str(out), "--model",
                 str(tiny_model), "--find", "cluster", "--precision", "fp32", "--tile-size", "64", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 1
    assert captured.err.strip().splitlines() == [f"ccdseg predict: error: {tmp_path / 'nope.fits'}: no such file"]
    assert str(out) in captured.out and "good_seg.fits" in captured.out and "region(s) of class cluster" in captured.out
    assert _cli(["predict", str(good), "--out-dir", str(out), "--model", str(tiny_model), "--overwrite",
                 "--no-progress"]) == 0
    # an operating point of 0.001 labels at least the argmax clusters, and the header records it
    with fits.open(out / "good_seg.fits") as seg:
        argmax_clusters = np.count_nonzero(seg["LABELS"].data == CLUSTER)
    assert _cli(["predict", str(good), "--out-dir", str(out), "--model", str(tiny_model), "--overwrite",
                 "--cluster-threshold", "0.001", "--no-progress"]) == 0
    with fits.open(out / "good_seg.fits") as seg:
        assert seg[0].header["CSCLTHR"] == 0.001
        assert np.count_nonzero(seg["LABELS"].data == CLUSTER) >= argmax_clusters
