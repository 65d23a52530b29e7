import csv

import matplotlib
import matplotlib.image
import numpy as np
import pytest

from ccdseg import plots
from ccdseg.classes import CLUSTER, GLOWING, HOT_PIXEL, IGNORE
from ccdseg.errors import InputError, OutputError
from ccdseg.measure.sections import find_sections

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path, min_height=100, min_width=100):
    with open(path, "rb") as stream:
        assert stream.read(8) == PNG_MAGIC
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[0] >= min_height and pixels.shape[1] >= min_width
    assert pixels[..., :3].std() > 0.01  # something is drawn
    assert not list(path.parent.glob(f".{path.name}.*"))  # no temporary file left behind
    return pixels


@pytest.fixture
def scene():
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 1.0, (64, 96))
    labels = np.zeros(image.shape, dtype=np.uint8)
    labels[10:14, 20:25] = CLUSTER
    image[10:14, 20:25] += 30.0
    labels[:, 50] = HOT_PIXEL
    labels[50:, 80:] = GLOWING
    return image, labels


def test_class_fractions():
    labels = np.array([[0, 0, 0, 1], [2, 3, 3, IGNORE]], dtype=np.uint8)
    np.testing.assert_allclose(plots.class_fractions(labels), [3 / 7, 1 / 7, 1 / 7, 2 / 7])
    np.testing.assert_allclose(plots.class_fractions(np.full((2, 2), IGNORE)), [0, 0, 0, 0])


def test_display_limits():
    image = np.arange(1000.0)
    image[0] = np.nan
    vmin, vmax = plots.display_limits(image, 10, 90)
    assert vmin == pytest.approx(np.percentile(np.arange(1, 1000.0), 10))
    assert vmax == pytest.approx(np.percentile(np.arange(1, 1000.0), 90))
    assert plots.display_limits(np.full((3, 3), 5.0)) == (5.0, 6.0)
    assert plots.display_limits(np.full(3, np.nan)) == (0.0, 1.0)


def test_plot_segmentation_and_legend(tmp_path, scene):
    image, labels = scene
    path = plots.plot_segmentation(image, labels, tmp_path / "seg.png", title="test")
    assert_png(path)
    # the legend shows class_fractions as percentages
    fractions = plots.class_fractions(labels)
    texts = [t.get_label() for t in plots._legend_handles(labels)]
    assert texts[CLUSTER] == f"cluster {100 * fractions[CLUSTER]:.2f} %" == "cluster 0.33 %"


def test_block_display_keeps_small_clusters():
    labels = np.zeros((2000, 3000), dtype=np.uint8)
    labels[1234, 2321] = CLUSTER
    labels[1235, 2321] = IGNORE
    image = np.zeros(labels.shape, dtype=np.float32)
    image[:, :1500] = 10.0
    shown, rgb, factor = plots._display_arrays(image, labels, 250)
    assert factor == 12 and shown.shape == (167, 250) and rgb.shape == (167, 250, 3)
    np.testing.assert_array_equal(np.argwhere((rgb != 0).any(axis=2)), [[1234 // 12, 2321 // 12]])
    np.testing.assert_allclose(shown[:, 124] - shown[:, 125], 10.0)


def test_plot_segmentation_panels_and_big_image(tmp_path, scene):
    image, labels = scene
    panels = [(name, image + i, labels) for i, name in enumerate(["CCD_A", "CCD_B", "CCD_D", "CCD_C"])]
    single = assert_png(plots.plot_segmentation(image, labels, tmp_path / "one.png"))
    four = assert_png(plots.plot_segmentation_panels(panels, tmp_path / "four.png"))
    assert four.shape[0] > 3 * single.shape[0]
    big = np.random.default_rng(1).normal(0, 1, (1024, 1536)).astype(np.float32)
    assert_png(plots.plot_segmentation(big, np.zeros(big.shape, np.uint8), tmp_path / "big.png"))
    with pytest.raises(OutputError):
        plots.plot_segmentation(image, labels, tmp_path / "missing" / "seg.png")


def test_plot_comparison(tmp_path, scene):
    image, labels = scene
    assert_png(plots.plot_comparison(image, labels, np.roll(labels, 2, axis=1), tmp_path / "cmp.png"))


def test_plot_curves_from_rows_and_csv(tmp_path):
    rows = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1.2 / e, "train_accuracy": 1 - 0.1 / e,
             "val_accuracy": 1 - 0.2 / e, "val_f1_cluster": 0.1 * e, "val_f1_hot_pixel": 0.05 * e}
            for e in range(1, 6)]
    assert_png(plots.plot_curves(rows, tmp_path / "rows.png"))
    with open(tmp_path / "log.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert_png(plots.plot_curves(tmp_path / "log.csv", tmp_path / "csv.png"))
    with pytest.raises(InputError, match="log.csv"):
        plots.plot_curves(tmp_path / "nothing" / "log.csv", tmp_path / "x.png")


def test_plot_confusion_and_efficiency(tmp_path):
    confusion = np.array([[900, 5, 3, 2], [10, 200, 0, 1], [0, 0, 50, 5], [0, 0, 0, 0]])
    assert_png(plots.plot_confusion(confusion, tmp_path / "conf.png"))
    centres = np.array([1.0, 3.0, 10.0, 30.0])
    curves = {"network": (centres, np.array([0.2, 0.6, 0.95, 1.0]), np.array([0.05, 0.05, 0.02, 0.0])),
              "classical": (centres, np.array([0.0, 0.3, 0.9, 1.0]), np.array([0.02, 0.05, 0.03, 0.0]))}
    assert_png(plots.plot_efficiency(curves, tmp_path / "eff.png"))


def test_plot_sections(tmp_path, scene):
    image, labels = scene
    sections = find_sections(labels, "cluster", margin=3) + find_sections(labels, "hot pixel", margin=3)
    assert_png(plots.plot_sections(image, labels, sections, tmp_path / "sections.png"))
    assert_png(plots.plot_sections(image, labels, [], tmp_path / "none.png"), min_width=50, min_height=50)


def test_spectrum_line_labels_of_close_lines_are_stacked():
    heights = plots.label_heights([1.74, 5.9, 6.49, 8.05, 17.5])
    assert heights[0] == heights[1] == heights[4] == 0.98   # Si and Mo Kα stand alone, Fe Kα starts a run
    assert heights[1] > heights[2] > heights[3] > 0.2         # Fe Kβ and Cu Kα below it
    assert plots.label_heights([]) == []


def test_plot_spectrum_with_and_without_energies(tmp_path):
    from astropy.table import Table

    rng = np.random.default_rng(3)
    n = 300
    table = Table({"hdu": rng.choice(["CCD_A", "CCD_B"], n), "kind": rng.choice(["point", "muon", ""], n),
                   "energy_ev": rng.lognormal(np.log(6000.0), 1.0, n), "fit_energy_ev": rng.normal(5900, 100, n),
                   "fit_sigma_x": rng.uniform(0.2, 1.6, n), "fit_sigma_y": rng.uniform(0.2, 1.6, n)})
    assert_png(plots.plot_spectrum(table, tmp_path / "spectrum.png", title="frame"), 300, 800)
    table["energy_ev"] = np.nan   # no gain
    assert_png(plots.plot_spectrum(table, tmp_path / "empty.png"), 300, 800)


def test_no_pyplot_state(tmp_path, scene):
    backend = matplotlib.get_backend()
    plots.plot_segmentation(*scene, tmp_path / "seg.png")
    import matplotlib.pyplot as plt
    assert plt.get_fignums() == [] and matplotlib.get_backend() == backend
