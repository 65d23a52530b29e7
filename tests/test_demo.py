import numpy as np

from ccdseg.io import read_images
from ccdseg.pipeline.demo import run_demo, sample_path


def test_demo_segments_a_simulated_frame_and_the_bundled_sample(tmp_path, tiny_model):
    outcome = run_demo(tmp_path / "demo", size=(128, 160), model=tiny_model, progress=False)
    assert outcome["failures"] == []
    stems = sorted(result.path.name for result in outcome["results"])
    assert stems == ["damicm_module_test.fz", "demo_damic.fits"]
    for name in ("demo_damic_seg.fits", "demo_damic.png", "demo_damic_clusters.csv",
                 "damicm_module_test_seg.fits", "damicm_module_test.png", "damicm_module_test_clusters_CCD_A.reg"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    labels = read_images(tmp_path / "demo" / "demo_damic_seg.fits", hdu="LABELS")[0].data
    assert labels.shape == (128, 160) and set(np.unique(labels)) <= {0, 1, 2, 3}
    assert "precision" in outcome["report"] and "clusters found" in outcome["report"]
    assert len(read_images(sample_path())) == 4  # the bundled DAMIC-M sample ships with the package
