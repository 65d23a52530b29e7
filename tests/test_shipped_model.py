"""The model shipped in the package: it loads with no network access and beats the classical baseline."""

import numpy as np
import pytest

from ccdseg.classical import segment_classical
from ccdseg.classes import CLUSTER, HOT_PIXEL
from ccdseg.config import load_config
from ccdseg.metrics import class_scores, confusion_matrix
from ccdseg.model import load_model
from ccdseg.predict import segment
from ccdseg.simulate import simulate_image


def test_shipped_model_is_self_describing():
    model = load_model()
    assert model.arch["base_width"] == 16 and model.arch["depth"] == 3
    assert model.classes == ["background", "glowing", "hot pixel", "cluster"]
    assert set(model.metadata["train_config"]["presets"]) == {"damic", "skipper", "thesis"}
    assert model.metadata["metrics"]["test"]["f1_cluster"] > 0.9


@pytest.mark.parametrize("preset", ["damic", "skipper"])
def test_shipped_model_beats_the_classical_baseline(preset):
    model = load_model()
    network, classical = np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64)
    for seed in range(2):
        sim = simulate_image(load_config(preset, overrides={"detector.height": 512, "detector.width": 512}),
                             seed=500 + seed)
        labels, _ = segment(sim.image, model, return_probabilities=False)
        network += confusion_matrix(sim.labels, labels)
        # as in benchmarks/accuracy.py: on skipper images single dark-current electrons are not clusters
        smallest = 2 if preset == "skipper" else 1
        classical += confusion_matrix(sim.labels, segment_classical(sim.image, min_cluster_pixels=smallest))
    ours, theirs = class_scores(network)["f1"], class_scores(classical)["f1"]
    assert ours[CLUSTER] > 0.9 and ours[CLUSTER] > theirs[CLUSTER] + 0.02
    assert ours[HOT_PIXEL] > 0.95 and ours[HOT_PIXEL] > theirs[HOT_PIXEL] + 0.05


@pytest.mark.slow
def test_demo_full_frame_with_the_shipped_model(tmp_path):
    """The README's first Quick start command, on the full 4096 x 4096 frame (~40 s)."""
    from ccdseg.demo import run_demo

    outcome = run_demo(tmp_path, progress=False)
    assert outcome["failures"] == []
    f1 = class_scores(outcome["confusion"])["f1"]
    assert f1[CLUSTER] > 0.9 and f1[HOT_PIXEL] > 0.95
    assert outcome["clusters"]["efficiency"] > 0.85 and outcome["clusters"]["false_per_mpix"] < 20
