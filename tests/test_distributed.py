import sys

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from ccdseg.cli import main
from ccdseg.errors import ConfigError
from ccdseg.pipeline.job import process_files
from conftest import save_tiny_model

distributed = pytest.importorskip("distributed")



@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A tiny model, three small images and a file that is not FITS."""
    root = tmp_path_factory.mktemp("inputs")
    save_tiny_model(root / "tiny.pt", sharpen=30)  # sharper logits: several classes appear
    paths = []
    for seed, shape in enumerate([(70, 90), (64, 130), (100, 80)]):
        rng = np.random.default_rng(seed)
        image = rng.normal(1000.0, 3.0, shape)
        image[rng.integers(0, shape[0], 30), rng.integers(0, shape[1], 30)] += rng.uniform(50, 2000, 30)
        paths.append(root / f"img{seed}.fits")
        fits.PrimaryHDU(np.round(image).astype(">i2")).writeto(paths[-1])
    bad = root / "bad.fits"
    bad.write_text("not a FITS file\n")
    paths.insert(1, bad)
    return root / "tiny.pt", paths


def _outputs(directory, stem):
    with fits.open(directory / f"{stem}_seg.fits") as hdul:
        return hdul["LABELS"].data.copy(), Table.read(hdul["CLUSTERS"])


def test_dask_run_equals_serial_run(inputs, tmp_path):
    model, paths = inputs
    serial, serial_failures = process_files(paths, tmp_path / "serial", model=model, progress=False)
    results, failures = process_files(paths, tmp_path / "dask", model=model, workers=2, progress=False)
    assert [r.path.name for r in results] == [r.path.name for r in serial] == ["img0.fits", "img1.fits", "img2.fits"]
    assert failures == serial_failures
    assert len(failures) == 1 and failures[0].startswith(f"{paths[1]}: not a readable FITS file (")
    for result in serial:
        stem = result.path.name.removesuffix(".fits")
        labels, clusters = _outputs(tmp_path / "serial", stem)
        dask_labels, dask_clusters = _outputs(tmp_path / "dask", stem)
        assert len(np.unique(labels)) > 1
        np.testing.assert_array_equal(dask_labels, labels)
        assert dask_clusters.colnames == clusters.colnames and len(clusters) > 0
        for name in clusters.colnames:
            np.testing.assert_array_equal(dask_clusters[name], clusters[name])
        assert sorted(p.name for p in (tmp_path / "dask").glob(f"{stem}*")) == \
            sorted(p.name for p in (tmp_path / "serial").glob(f"{stem}*"))


def test_cli_on_an_existing_scheduler(inputs, tmp_path, capsys):
    model, paths = inputs
    # workers in this process (threads): no start-up of worker processes
    with distributed.LocalCluster(n_workers=1, processes=False, dashboard_address=None) as cluster:
        code = main(["predict", *map(str, paths[:2]), "--out-dir", str(tmp_path), "--model", str(model),
                     "--scheduler", cluster.scheduler_address, "--no-progress"])
    assert code == 1
    out, err = capsys.readouterr()
    assert f"{paths[1]}: not a readable FITS file" in err and "1 of 2 file(s) segmented" in out
    labels, _ = _outputs(tmp_path, "img0")
    assert labels.shape == (70, 90)


def test_option_errors(inputs, tmp_path, capsys, monkeypatch):
    model, paths = inputs
    with pytest.raises(ConfigError, match="'tcp://' is not an address like tcp://HOST:PORT"):
        process_files(paths, tmp_path, model=model, scheduler="tcp://")
    with pytest.raises(ConfigError, match="workers must be a positive integer"):
        process_files(paths, tmp_path, model=model, workers=0)
    with pytest.raises(ConfigError, match="exactly one of workers"):
        process_files(paths, tmp_path, model=model, workers=2, scheduler="tcp://127.0.0.1:1")
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "distributed", None)  # as if Dask were not installed
        with pytest.raises(ConfigError, match=r"need Dask: pip install 'ccdseg\[dask\]'"):
            process_files(paths, tmp_path, model=model, workers=2)
    with pytest.raises(SystemExit):
        main(["predict", str(paths[0]), "--out-dir", str(tmp_path), "--workers", "2", "--scheduler", "tcp://h:1"])
    assert "not allowed with argument" in capsys.readouterr().err
