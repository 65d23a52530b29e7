import numpy as np
from astropy.io import fits

from ccdseg.cli import main
from ccdseg.io import read_images
from ccdseg.sim.truth import read_truth


def test_simulate_writes_images_with_truth_and_is_reproducible(tmp_path, capsys):
    args = ["--n", "2", "--size", "64", "96", "--seed", "7", "--preset", "skipper"]
    assert main(["simulate", str(tmp_path / "a"), *args]) == 0
    assert main(["simulate", str(tmp_path / "b"), *args]) == 0
    assert "wrote 2 images" in capsys.readouterr().out
    for index in range(2):
        name = f"sim_{index:05d}.fits"
        a, b = (fits.getdata(tmp_path / d / name) for d in "ab")
        assert a.shape == (64, 96) and a.dtype.kind == "f" and a.dtype.itemsize == 4
        assert np.array_equal(a, b)  # same seed, same files
        header = fits.getheader(tmp_path / "a" / name)
        assert header["GAIN"] == 1.3 and header["PRESET"] == "skipper" and header["SIMINDEX"] == index
        labels, ids, truth = read_truth(tmp_path / "a" / name)
        assert labels.shape == (64, 96) and set(np.unique(labels)) <= {0, 1, 2, 3}
        assert np.all((ids > 0) == (labels == 3))
        assert set(truth.colnames) >= {"id", "kind", "energy_ev", "charge_e", "x", "y", "depth_um", "npix"}
    first, second = (read_images(tmp_path / "a" / f"sim_0000{i}.fits")[0].data for i in range(2))
    assert not np.array_equal(first, second)


def test_simulate_rejects_bad_config_before_writing(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["simulate", str(out), "--set", "detector.read_noise_e=-2"]) == 2
    assert "detector.read_noise_e" in capsys.readouterr().err
    assert not out.exists()
