"""The model shipped in the package: it loads with no network access and beats the classical baseline."""

import numpy as np
import pytest
from scipy import ndimage

from ccdseg.calib.gain import estimate_gain
from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.infer.predict import segment
from ccdseg.io import read_images
from ccdseg.measure.classical import segment_classical
from ccdseg.metrics import class_scores, confusion_matrix
from ccdseg.nn.model import load_model
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import simulate_image


def test_shipped_model_is_self_describing():
    model = load_model()
    assert model.arch["base_width"] == 16 and model.arch["depth"] == 3
    assert model.classes == ["background", "glowing", "hot pixel", "cluster"]
    assert set(model.metadata["train_config"]["presets"]) == {"damic", "skipper", "damicm", "thesis"}
    assert model.metadata["metrics"]["test"]["f1_cluster"] > 0.9


@pytest.mark.parametrize("preset", ["damic", "skipper", "damicm"])
def test_shipped_model_beats_the_classical_baseline(preset):
    model = load_model()
    network, classical = np.zeros((4, 4), np.int64), np.zeros((4, 4), np.int64)
    for seed in range(2):
        sim = simulate_image(load_config(preset, overrides={"detector.height": 512, "detector.width": 512,
                                                              "glow.probability": 1.0}), seed=500 + seed)
        labels, _ = segment(sim.image, model, return_probabilities=False)
        network += confusion_matrix(sim.labels, labels)
        # as in benchmarks/accuracy.py: on skipper images single dark-current electrons are not clusters
        smallest = 2 if preset in ("skipper", "damicm") else 1
        classical += confusion_matrix(sim.labels, segment_classical(sim.image, min_cluster_pixels=smallest))
    ours, theirs = class_scores(network)["f1"], class_scores(classical)["f1"]
    # the shipped model predates the measured damicm preset (wider clusters, 55Fe, RICE rounding): 0.89 there
    assert ours[CLUSTER] > (0.85 if preset == "damicm" else 0.9) and ours[CLUSTER] > theirs[CLUSTER]
    if preset != "damicm":  # as measured on the real sample: no glow, no hot lines, 0-5 hot pixels per Mpix
        assert ours[HOT_PIXEL] > 0.9 and ours[HOT_PIXEL] > theirs[HOT_PIXEL] + 0.05
        assert ours[GLOWING] > 0.85 and ours[GLOWING] > theirs[GLOWING] + 0.05


def test_shipped_model_on_the_real_damicm_sample(damicm_sample):
    """The bundled DAMIC-M module test (4 skipper CCDs, 0.5-3 e-/pixel of dark charge): single
    dark-current electrons stay background, no glow is invented, the bright clusters are found
    and the long one-row streaks of the serial register are not called clusters."""
    model = load_model()
    blobs = found = streaks = streak_clusters = 0
    for image in read_images(damicm_sample):
        data = image.data.astype(np.float64)
        labels, _ = segment(data, model, return_probabilities=False)
        electrons = (data - np.median(data, axis=1)[:, None]) / estimate_gain(data).value
        # dark current: pixels 0.5-2.5 e- above their row's median with no pixel above 2.5 e- around them
        bright_near = ndimage.binary_dilation(electrons > 2.5, np.ones((3, 3), bool))
        isolated = (electrons > 0.5) & (electrons < 2.5) & ~bright_near
        dark_as_background, glowing = np.mean(labels[isolated] == BACKGROUND), np.mean(labels == GLOWING)
        print(f"{image.label}: {100 * dark_as_background:.2f} % of {isolated.sum()} isolated dark-current pixels "
              f"background, {100 * glowing:.2f} % of the pixels glowing")
        assert isolated.sum() > 10_000
        assert dark_as_background > 0.97 and glowing < 0.03, image.label
        components, _ = ndimage.label(electrons > 10, np.ones((3, 3), bool))
        for index, box in enumerate(ndimage.find_objects(components), start=1):
            height, width = box[0].stop - box[0].start, box[1].stop - box[1].start
            mine = labels[box][components[box] == index]
            if height == 1 and width >= 6:
                streaks += 1
                streak_clusters += np.mean(mine == CLUSTER) > 0.5
            elif height >= 2 and width >= 2 and mine.size >= 4:
                blobs += 1
                found += np.any(mine == CLUSTER)
    print(f"bright clusters found: {found} of {blobs}; one-row streaks called clusters: {streak_clusters} of {streaks}")
    assert blobs > 300 and found >= 0.98 * blobs
    assert streaks >= 2 and streak_clusters <= streaks // 4


@pytest.mark.slow
def test_demo_full_frame_with_the_shipped_model(tmp_path):
    """The README's first Quick start command, on the full 4096 x 4096 frame (~40 s)."""
    from ccdseg.pipeline.demo import run_demo

    outcome = run_demo(tmp_path, progress=False)
    assert outcome["failures"] == []
    f1 = class_scores(outcome["confusion"])["f1"]
    assert f1[CLUSTER] > 0.9 and f1[HOT_PIXEL] > 0.95
    assert outcome["clusters"]["efficiency"] > 0.85 and outcome["clusters"]["false_per_mpix"] < 20
