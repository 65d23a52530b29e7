import numpy as np
import pytest
from astropy.table import Table

from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL, IGNORE
from ccdseg.metrics import (
    binned_efficiency,
    charge_at_efficiency,
    class_scores,
    cluster_object_metrics,
    confusion_matrix,
    efficiency_table,
    format_report,
    match_clusters,
    pixel_accuracy,
)

TRUTH = np.array([[0, 0, 0, 1],
                  [1, 2, 3, 3],
                  [3, 0, 0, 0]])
PRED = np.array([[0, 0, 1, 1],
                 [0, 2, 3, 0],
                 [3, 3, 0, 0]])


def test_confusion_matrix_of_known_map():
    expected = np.array([[4, 1, 0, 1],
                         [1, 1, 0, 0],
                         [0, 0, 1, 0],
                         [1, 0, 0, 2]])
    matrix = confusion_matrix(TRUTH, PRED)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, expected)
    np.testing.assert_array_equal(confusion_matrix(TRUTH.ravel(), PRED.ravel()), expected)
    assert pixel_accuracy(matrix) == pytest.approx(8 / 12)


def test_ignored_truth_pixels_are_skipped():
    truth = TRUTH.copy()
    truth[0, 0] = IGNORE   # was a correct background pixel
    truth[1, 3] = IGNORE   # was a cluster pixel predicted background
    matrix = confusion_matrix(truth, PRED)
    assert matrix.sum() == 10
    assert matrix[BACKGROUND, BACKGROUND] == 3
    assert matrix[CLUSTER, BACKGROUND] == 0


def test_out_of_range_ids_and_shape_mismatch_raise():
    with pytest.raises(ValueError, match="truth contains"):
        confusion_matrix(np.array([IGNORE]), np.array([0]), ignore_index=None)
    with pytest.raises(ValueError, match="prediction contains"):
        confusion_matrix(np.array([0]), np.array([7]))
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(np.zeros((2, 2)), np.zeros(4))


def test_class_scores_by_hand():
    scores = class_scores(confusion_matrix(TRUTH, PRED))
    assert list(scores["name"]) == ["background", "glowing", "hot pixel", "cluster"]
    # background: TP 4, true 6, predicted 6
    bg = scores[BACKGROUND]
    assert bg["precision"] == pytest.approx(4 / 6)
    assert bg["recall"] == pytest.approx(4 / 6)
    assert bg["f1"] == pytest.approx(4 / 6)
    assert bg["iou"] == pytest.approx(4 / 8)
    # glowing: TP 1, true 2, predicted 2
    assert scores[GLOWING]["iou"] == pytest.approx(1 / 3)
    # cluster: TP 2, true 3, predicted 3
    cl = scores[CLUSTER]
    assert (cl["precision"], cl["recall"], cl["f1"], cl["iou"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3, 0.5))
    assert list(scores["support"]) == [6, 2, 1, 3]
    assert scores[HOT_PIXEL]["iou"] == 1.0


def test_absent_class_scores_nan_and_report_skips_it():
    truth = np.array([0, 0, 3, 3])
    pred = np.array([0, 3, 3, 3])
    scores = class_scores(confusion_matrix(truth, pred))
    assert np.isnan(scores[GLOWING]["precision"]) and np.isnan(scores[GLOWING]["recall"])
    assert scores[CLUSTER]["precision"] == pytest.approx(2 / 3)
    report = format_report(confusion_matrix(truth, pred))
    lines = {line.strip().split("  ")[0]: line.strip() for line in report.splitlines() if line.strip()}
    assert "f1-score" in report and "iou" in report
    assert lines["accuracy"].split()[1:] == ["0.750", "4"]
    assert lines["glowing"].split()[1:] == ["nan"] * 4 + ["0"]
    # macro avg over background and cluster only: precision (1 + 2/3) / 2, IoU (1/2 + 2/3) / 2
    assert lines["macro avg"].split()[2:] == ["0.833", "0.750", "0.733", "0.583", "4"]
    # weighted recall: (2 * 0.5 + 2 * 1) / 4
    assert lines["weighted avg"].split()[3] == "0.750"


def _tiny_scene():
    """Three true clusters (ids 1, 2, 3; id 3 too faint to own pixels) and a prediction."""
    ids = np.zeros((8, 8), dtype=np.int32)
    ids[1, 1:3] = 1          # 2 px
    ids[5, 5] = 2            # 1 px
    table = Table({"id": [1, 2, 3], "charge_e": [50.0, 5.0, 2.0], "depth_um": [100.0, 500.0, 300.0],
                   "npix": [2, 1, 0]})
    pred = np.zeros((8, 8), dtype=np.uint8)
    pred[1, 2] = CLUSTER     # one pixel of cluster 1 -> detected
    pred[1, 3] = CLUSTER     # same component, still touches cluster 1
    pred[6, 0] = CLUSTER     # false component
    pred[7, 1] = CLUSTER     # diagonal neighbour: same component with 8-connectivity
    pred[3, 6] = HOT_PIXEL
    charge = np.zeros((8, 8), dtype=np.float32)
    charge[1, 1], charge[1, 2], charge[5, 5], charge[4, 4] = 20.0, 30.0, 5.0, 2.0
    return ids, table, pred, charge


def test_match_clusters_detection_and_false_counts():
    ids, table, pred, _ = _tiny_scene()
    match = match_clusters(ids, table, pred)
    np.testing.assert_array_equal(match.detected, [True, False, False])
    assert (match.n_true, match.n_detected, match.n_pred, match.n_false, match.n_pixels) == (3, 1, 2, 1, 64)
    four = match_clusters(ids, table, pred, connectivity=1)
    assert (four.n_pred, four.n_false) == (3, 2)


def test_cluster_object_metrics_counts_completeness_and_lists_add():
    ids, table, pred, charge = _tiny_scene()
    result = cluster_object_metrics(ids, table, pred, cluster_charge=charge,
                                    charge_bins=[1, 10, 100], depth_bins=[0, 200, 675])
    assert result["charge_completeness"] == pytest.approx(30.0 / 57.0)
    assert result["false_per_mpix"] == pytest.approx(1e6 / 64)
    assert (result["n_true"], result["n_detected"], result["n_false"]) == (3, 1, 1)
    assert list(result["by_charge"]["n_true"]) == [2, 1]
    assert list(result["by_charge"]["n_detected"]) == [0, 1]
    assert list(result["by_depth"]["efficiency"]) == [1.0, 0.0]
    # efficiency 0 then 1 at the bin centres 10**0.5 and 10**1.5: the 50 % crossing is halfway in log
    assert result["charge_at_level_e"] == pytest.approx(10.0)

    twice = cluster_object_metrics([ids, ids], [table, table], [pred, pred], [charge, charge],
                                   charge_bins=[1, 10, 100])
    assert (twice["n_true"], twice["n_false"], twice["n_pixels"]) == (6, 2, 128)
    assert list(twice["by_charge"]["n_true"]) == [4, 2]
    assert twice["charge_completeness"] == pytest.approx(30.0 / 57.0)
    assert np.isnan(cluster_object_metrics(ids, table, pred)["charge_completeness"])


def test_binomial_errors():
    table = binned_efficiency([1.5, 1.5, 1.5, 1.5, 5.0], [True, False, True, False, True], [1, 2, 4, 8])
    assert list(table["n_true"]) == [4, 0, 1]
    assert table["efficiency"][0] == 0.5
    assert table["efficiency_err"][0] == pytest.approx(0.25)
    assert np.isnan(table["efficiency"][1])
    # Wilson interval at efficiency 1 with n = 1: (1/(1+1), 1)
    assert (table["efficiency_lo"][2], table["efficiency_hi"][2]) == pytest.approx((0.5, 1.0))
    assert table["centre"][0] == pytest.approx(np.sqrt(2))
    summed = efficiency_table([1, 2, 4, 8], table["n_true"] * 2, table["n_detected"] * 2)
    assert summed["efficiency_err"][0] == pytest.approx(np.sqrt(0.25 / 8))


def test_charge_at_efficiency_on_synthetic_curves():
    centres = np.array([1.0, 10.0, 100.0, 1000.0, 1e4])
    assert charge_at_efficiency(centres, [0.0, 0.2, 0.4, 0.8, 1.0]) == pytest.approx(10 ** 2.25)
    # nan bins are skipped, a dip after the first crossing does not matter
    assert charge_at_efficiency(centres, [0.0, np.nan, 0.4, 0.8, 0.3]) == pytest.approx(10 ** 2.25)
    assert np.isnan(charge_at_efficiency(centres, [0.0, 0.1, 0.2, 0.3, 0.4]))
    assert np.isnan(charge_at_efficiency(centres, [0.6, 0.7, 0.8, 0.9, 1.0]))
    # logistic in log10(charge) centred at 30 e-: finely binned, the crossing is 30 e-
    fine = np.logspace(0, 4, 81)
    logistic = 1 / (1 + np.exp(-(np.log10(fine) - np.log10(30.0)) / 0.2))
    assert charge_at_efficiency(fine, logistic) == pytest.approx(30.0, rel=1e-3)
    assert charge_at_efficiency(fine, logistic, level=0.9) == pytest.approx(30.0 * 10 ** (0.2 * np.log(9)), rel=5e-3)
