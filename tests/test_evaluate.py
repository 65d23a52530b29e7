import json

import numpy as np
import pytest
from astropy.io import fits

from ccdseg import io, metrics
from ccdseg.classes import NAMES
from ccdseg.cli import main
from ccdseg.evaluate.evaluation import Evaluation, evaluate_files, find_images, labeller, read_simulated, write_outputs
from ccdseg.sim.benchmark import make_benchmark_set
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import simulate_image
from ccdseg.sim.truth import read_truth, truth_path, write_simulation


def _simulate(directory, n, size=128, seed=0, preset="damic"):
    config = load_config(preset, overrides=[f"detector.height={size}", f"detector.width={size}"])
    paths = []
    for index in range(n):
        path = directory / f"sim_{index:05d}.fits"
        write_simulation(simulate_image(config, seed=seed + index), path)
        paths.append(path)
    return paths


def _truth_as_predictions(paths, directory):
    """NAME_seg.fits holding the true labels, as ccdseg predict would write them."""
    directory.mkdir()
    for path in paths:
        labels = read_truth(path)[0]
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(labels, name="LABELS")]).writeto(
            directory / f"{io.fits_stem(path)}_seg.fits")
    return directory


@pytest.fixture(scope="module")
def damic_set(tmp_path_factory):
    directory = tmp_path_factory.mktemp("damic")
    return _simulate(directory, 4, size=256, seed=10)


def test_truth_against_itself_scores_perfectly(tmp_path, damic_set):
    predictions = _truth_as_predictions(damic_set, tmp_path / "pred")
    evaluations, failures = evaluate_files(damic_set, {"truth": labeller("predictions", predictions=predictions)})
    summary = evaluations["truth"].summary()
    assert failures == []
    assert summary["n_images"] == 4 and summary["n_pixels"] == 4 * 256 * 256
    for name, scores in summary["pixels"]["classes"].items():
        if scores["support"]:
            assert scores["f1"] == scores["iou"] == scores["precision"] == scores["recall"] == 1.0, name
    clusters = summary["clusters"]
    assert clusters["n_true"] > 50
    assert clusters["n_detected"] == clusters["n_true"] and clusters["efficiency"] == 1.0
    assert clusters["n_false"] == 0 and clusters["false_per_mpix"] == 0.0
    assert clusters["charge_completeness"] == pytest.approx(1.0)
    assert all(row["efficiency"] == 1.0 for row in clusters["by_charge"] + clusters["by_depth"])
    # perfect from the lowest bin on: the 50 % point lies below the simulated charges
    assert clusters["charge_at_50_e"] is None
    assert clusters["charge_at_50_below_e"] == clusters["by_charge"][0]["lo"]


def test_counts_over_images_match_metrics_on_the_whole_list(damic_set):
    label = labeller("classical")
    evaluations, _ = evaluate_files(damic_set, {"classical": label})
    evaluation = evaluations["classical"]
    truths = [read_simulated(path) for path in damic_set]
    ids = [t[2] for t in truths]
    tables = [t[3][np.isin(t[3]["id"], np.unique(t[2][t[2] > 0]))] for t in truths]
    preds = [label(path, t[0]) for path, t in zip(damic_set, truths, strict=True)]
    expected = metrics.cluster_object_metrics(ids, tables, preds, [t[4] for t in truths])
    summary = evaluation.summary()["clusters"]
    for key in ("n_true", "n_detected", "n_pred", "n_false"):
        assert summary[key] == expected[key]
    assert summary["charge_completeness"] == pytest.approx(expected["charge_completeness"])
    np.testing.assert_array_equal(evaluation.efficiency("charge")["n_detected"], expected["by_charge"]["n_detected"])
    confusion = sum(metrics.confusion_matrix(t[1], p) for t, p in zip(truths, preds, strict=True))
    np.testing.assert_array_equal(evaluation.confusion, confusion)


def test_classical_baseline_finds_damic_clusters(damic_set):
    evaluation = evaluate_files(damic_set, {"classical": labeller("classical")})[0]["classical"]
    clusters = evaluation.summary()["clusters"]
    # 4σ seeds on 2 e- noise: nearly everything above ~100 e- is found, half near 10-40 e-
    assert clusters["efficiency"] > 0.8
    assert 5.0 < clusters["charge_at_50_e"] < 60.0
    bright = [row for row in clusters["by_charge"] if row["lo"] >= 100]
    assert sum(r["n_detected"] for r in bright) >= 0.95 * sum(r["n_true"] for r in bright)
    assert 0.7 < clusters["charge_completeness"] <= 1.0
    assert evaluation.summary()["pixels"]["classes"]["cluster"]["f1"] > 0.7


def test_mismatched_truth_is_reported_and_skipped(tmp_path):
    paths = _simulate(tmp_path, 3, size=64)
    small = simulate_image(load_config("damic", overrides=["detector.height=32", "detector.width=32"]), seed=5)
    write_simulation(small, tmp_path / "other" / "x.fits")
    (tmp_path / "other" / "x_truth.fits").replace(truth_path(paths[1]))
    evaluations, failures = evaluate_files(paths, {"classical": labeller("classical")})
    assert len(failures) == 1
    assert failures[0].startswith(str(truth_path(paths[1])))
    assert "(32, 32) does not match the image shape (64, 64)" in failures[0]
    assert evaluations["classical"].n_images == 2


def test_cli_writes_json_table_and_figures(tmp_path, damic_set, capsys):
    predictions = _truth_as_predictions(damic_set, tmp_path / "pred")
    out = tmp_path / "out"
    inputs = str(damic_set[0].parent)
    assert main(["evaluate", inputs, "--out-dir", str(out), "--predictions", str(predictions), "--json",
                 "--no-progress"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document == json.loads((out / "evaluation.json").read_text())
    assert set(document) == {"ccdseg_version", "failures", "methods"}
    assert list(document["methods"]) == ["predictions", "classical"]
    method = document["methods"]["predictions"]
    assert set(method) == {"method", "n_images", "n_pixels", "seconds_per_mpix", "pixels", "clusters"}
    assert set(method["pixels"]) == {"accuracy", "classes", "confusion"}
    assert list(method["pixels"]["classes"]) == list(NAMES)
    assert set(method["pixels"]["classes"]["cluster"]) == {"precision", "recall", "f1", "iou", "support"}
    assert set(method["clusters"]) == {
        "n_true", "n_detected", "efficiency", "n_pred", "n_false", "false_per_mpix", "charge_true_e",
        "charge_found_e", "charge_completeness", "charge_at_50_e", "charge_at_50_below_e", "by_charge", "by_depth"}
    assert method["pixels"]["accuracy"] == 1.0
    assert document["methods"]["classical"]["pixels"]["accuracy"] < 1.0
    for name in ("efficiency_charge.png", "confusion_predictions.png", "confusion_classical.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # existing outputs are kept without --overwrite; the table names both methods
    assert main(["evaluate", inputs, "--out-dir", str(out), "--method", "classical", "--no-progress"]) == 2
    assert "exists" in capsys.readouterr().err
    assert main(["evaluate", inputs, "--out-dir", str(out), "--predictions", str(predictions), "--overwrite",
                 "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "clusters as objects" in table and "predictions" in table and "classical" in table


def test_network_method_runs_a_model_file(tmp_path):
    from ccdseg.nn.model import build_model, save_model

    tiny = {"depth": 1, "base_width": 4}
    model_path = tmp_path / "tiny.pt"
    save_model(model_path, build_model(tiny), tiny, None)
    paths = _simulate(tmp_path, 1, size=64)
    evaluations, failures = evaluate_files(paths, {"network": labeller("network", model=model_path, tile_size=64)})
    assert failures == []
    evaluation = evaluations["network"]
    assert evaluation.confusion.sum() == 64 * 64 and evaluation.seconds > 0
    write_outputs(evaluations, tmp_path / "out")
    assert (tmp_path / "out" / "efficiency_charge.png").stat().st_size > 0


def test_benchmark_set_is_reproducible(tmp_path):
    first = make_benchmark_set(tmp_path / "a", presets=("damic", "thesis"), n=2, size=(48, 64), seed=3)
    second = make_benchmark_set(tmp_path / "b", presets=("thesis",), n=1, size=(48, 64), seed=3)
    again = fits.getdata(second["thesis"][0])
    assert again.shape == (48, 64)
    # image i of a preset depends on (seed, preset, i) only
    np.testing.assert_array_equal(fits.getdata(first["thesis"][0]), again)
    assert not np.array_equal(fits.getdata(first["thesis"][0]), fits.getdata(first["thesis"][1]))
    assert find_images([tmp_path / "a" / "damic"]) == first["damic"]
    manifest = json.loads((tmp_path / "a" / "benchmark.json").read_text())
    assert manifest["presets"] == ["damic", "thesis"] and manifest["n"] == 2 and manifest["seed"] == 3
    assert fits.getheader(first["damic"][1])["SIMINDEX"] == 1


def test_empty_evaluation_has_undefined_scores():
    summary = Evaluation("none").summary()
    assert summary["n_images"] == 0
    assert summary["clusters"]["efficiency"] is None and summary["clusters"]["charge_at_50_e"] is None
    assert summary["clusters"]["by_charge"] == []
