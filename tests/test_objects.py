import numpy as np
import pytest

from ccdseg.classes import BACKGROUND, CLUSTER, GLOWING, HOT_PIXEL
from ccdseg.errors import ConfigError
from ccdseg.measure.diffusion import depth_from_sigma, fit_diffusion
from ccdseg.measure.objects import resolve_objects
from ccdseg.sim.events import diffusion_sigma_um


def test_hot_line_takes_its_cluster_end():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:12, 5] = HOT_PIXEL
    labels[12:15, 5] = CLUSTER           # the line's end, on its column
    labels[8:11, 12:15] = CLUSTER        # a real cluster elsewhere
    out = resolve_objects(labels)
    assert np.all(out[2:15, 5] == HOT_PIXEL)
    assert np.all(out[8:11, 12:15] == CLUSTER)


def test_cluster_crossing_a_line_stays_cluster():
    labels = np.zeros((20, 20), np.uint8)
    labels[2:12, 5] = HOT_PIXEL
    labels[12:15, 4:7] = CLUSTER         # wider than the line: a real cluster
    out = resolve_objects(labels)
    assert np.all(out[12:15, 4:7] == CLUSTER)


def test_glow_halo_goes_and_real_glow_stays():
    labels = np.zeros((80, 80), np.uint8)
    labels[8:13, 8:13] = CLUSTER
    labels[7, 7:20] = GLOWING             # a thin ring piece hugging the cluster
    labels[10, 10] = HOT_PIXEL            # a fragment inside the cluster
    labels[40:70, 30:70] = GLOWING        # a real glow region...
    labels[50:53, 50:53] = CLUSTER        # ...with a cluster in it
    probabilities = np.zeros((4, 80, 80))
    probabilities[HOT_PIXEL, 7, 19] = 1.0  # the network's second choice decides between background and hot
    out = resolve_objects(labels)
    assert np.all(out[7, 7:20] == BACKGROUND)
    assert out[10, 10] == CLUSTER
    assert (out[40:70, 30:70] == GLOWING).sum() == 30 * 40 - 9
    out = resolve_objects(labels, probabilities)
    assert out[7, 19] == HOT_PIXEL and np.all(out[7, 7:19] == BACKGROUND)
    probabilities[HOT_PIXEL, 7, 7] = 1.0  # hot, but beside the cluster: a piece of it
    assert resolve_objects(labels, probabilities)[7, 7] == CLUSTER


def test_halo_enclosed_by_a_cluster_becomes_cluster():
    labels = np.zeros((60, 60), np.uint8)
    labels[10:20, 10:20] = CLUSTER
    labels[14:16, 14:16] = GLOWING          # a hole in a cluster, 4-connected to nothing outside
    labels[30:40, 30:40] = CLUSTER
    labels[34:36, 34:40] = GLOWING          # a notch open to the right: not enclosed
    labels[34:36, 40:43] = GLOWING
    labels[45:50, 10] = CLUSTER
    labels[45, 11:14] = CLUSTER
    labels[49, 11:14] = CLUSTER
    labels[46:49, 13] = CLUSTER            # a ring drawn 1 px wide...
    labels[47, 11] = GLOWING                # ...around two glow pixels
    labels[47, 12] = GLOWING
    out = resolve_objects(labels)
    assert np.all(out[14:16, 14:16] == CLUSTER)
    assert np.all(out[34:36, 34:43] == BACKGROUND)
    assert np.all(out[47, 11:13] == CLUSTER)
    # the rim of a hole is 8-connected: a diagonal step closes it, the hole inside is 4-connected
    labels = np.zeros((20, 20), np.uint8)
    labels[5, 6], labels[6, 5], labels[6, 7], labels[7, 6] = CLUSTER, CLUSTER, CLUSTER, CLUSTER
    labels[6, 6] = GLOWING
    assert resolve_objects(labels)[6, 6] == CLUSTER


def test_hot_fragment_joins_a_cluster_several_times_its_size():
    labels = np.zeros((40, 40), np.uint8)
    labels[5, 5] = HOT_PIXEL              # a bright core called hot...
    labels[4:7, 6:8] = CLUSTER            # ...with its 6-pixel wing called cluster
    labels[20, 20] = HOT_PIXEL            # a hot pixel beside a one-pixel "cluster"
    labels[20, 21] = CLUSTER
    labels[30:33, 5:7] = HOT_PIXEL        # a 6-pixel hot piece: more than a fragment
    labels[30:35, 7:12] = CLUSTER
    out = resolve_objects(labels)
    assert out[5, 5] == CLUSTER
    assert out[20, 20] == HOT_PIXEL and out[20, 21] == CLUSTER
    assert np.all(out[30:33, 5:7] == HOT_PIXEL)


def test_resolve_objects_rejects_bad_options():
    with pytest.raises(ConfigError):
        resolve_objects(np.zeros((4, 4), np.uint8), halo_share=0)


def test_depth_inverts_the_diffusion_law():
    depth = np.array([10.0, 200.0, 600.0])
    sigma = diffusion_sigma_um(depth, 216.2, 8.86e-4)
    recovered, error = depth_from_sigma(sigma, 0.1)
    np.testing.assert_allclose(recovered, depth, rtol=1e-9)
    assert np.all(error > 0)


def test_fit_diffusion_recovers_the_law():
    rng = np.random.default_rng(1)
    fraction = rng.uniform(0.05, 0.95, 300)
    variance = diffusion_sigma_um(fraction * 675.0, 250.0, 7e-4) ** 2 / 15.0 ** 2
    a, b, _, _ = fit_diffusion(fraction, variance * (1 + rng.normal(0, 0.02, fraction.size)))
    assert a == pytest.approx(250.0, rel=0.05)
    assert b == pytest.approx(7e-4, rel=0.05)


def test_fit_diffusion_resists_widths_inflated_by_neighbouring_events():
    # a tenth of the samples 3-10x too wide, as a point or a worm beside a track makes them
    rng = np.random.default_rng(2)
    fraction = np.repeat(np.linspace(0.1, 0.9, 9), 100)
    variance = diffusion_sigma_um(fraction * 675.0, 530.0, 8.86e-4) ** 2 / 15.0 ** 2
    variance = variance * (1 + rng.normal(0, 0.1, fraction.size))
    outliers = rng.random(fraction.size) < 0.1
    variance[outliers] *= rng.uniform(3, 10, outliers.sum())
    a, b, a_err, b_err = fit_diffusion(fraction, variance)
    assert a == pytest.approx(530.0, rel=0.05) and b == pytest.approx(8.86e-4, rel=0.05)
    assert abs(a - 530.0) < 4 * a_err and abs(b - 8.86e-4) < 4 * b_err


def test_kinds_of_simulated_clusters():
    from scipy import ndimage

    from ccdseg.calib.background import row_pedestal
    from ccdseg.measure.kinds import KINDS, SIM_KINDS, classify_kinds
    from ccdseg.sim.config import load_config
    from ccdseg.sim.simulate import simulate_image

    sim = simulate_image(load_config("skipper", overrides={"detector.height": 512, "detector.width": 512}), seed=11)
    charge = (sim.image - row_pedestal(sim.image)[:, None]) / sim.config.detector.gain_adu_per_e
    components, n = ndimage.label(sim.labels == CLUSTER, structure=np.ones((3, 3)))
    kinds, probabilities = classify_kinds(charge, components, n)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    kind_of = dict(zip(sim.truth["id"], sim.truth["kind"], strict=True))
    owner = ndimage.maximum(sim.ids, components, np.arange(1, n + 1)).astype(int)
    truth = np.array([SIM_KINDS[kind_of[i]] for i in owner])
    points = truth == "point"
    assert points.sum() > 50
    assert np.mean(kinds[points] == "point") >= 0.95
    assert set(kinds) <= set(KINDS)


def test_width_profiles_of_simulated_muons_recover_the_diffusion_law():
    from scipy import ndimage

    from ccdseg.calib.background import row_pedestal
    from ccdseg.measure.diffusion import width_profile
    from ccdseg.pipeline.diffusion import WING_PX
    from ccdseg.sim.config import load_config
    from ccdseg.sim.simulate import iter_simulations

    config = load_config("skipper", overrides={
        "detector.height": 512, "detector.width": 512, "clusters.muons_per_mpix": (60.0, 60.0),
        "clusters.points_per_mpix": (10.0, 10.0), "clusters.worms_per_mpix": (0.0, 0.0)})
    profiles = {"labels": ([], []), "trimmed core and wings": ([], [])}
    for sim, _ in zip(iter_simulations(config, seed=0), range(10), strict=False):
        charge = (sim.image - row_pedestal(sim.image)[:, None]) / config.detector.gain_adu_per_e
        components, _ = ndimage.label(sim.labels == CLUSTER, structure=np.ones((3, 3)))
        kind_of = dict(zip(sim.truth["id"], sim.truth["kind"], strict=True))
        for index, box in enumerate(ndimage.find_objects(components)):
            rows, cols = np.nonzero(components[box] == index + 1)
            owners = sim.ids[box][rows, cols]
            inside = box[0].start > 4 and box[1].start > 4 and box[0].stop < 508 and box[1].stop < 508
            if not inside or np.any(owners != owners[0]) or kind_of[owners[0]] != "muon":
                continue
            length, fraction, variance = width_profile(charge[box][rows, cols], rows, cols)
            # as a segmentation leaves it: the faint wings (< 30 e-) cut off, then given back by the wing pixels
            window = tuple(slice(side.start - WING_PX, side.stop + WING_PX) for side in box)
            own = (components[window] == index + 1) & (charge[window] >= 30)
            near = own | (ndimage.binary_dilation(own, iterations=WING_PX)
                          & ((sim.labels[window] == BACKGROUND) | (components[window] == index + 1)))
            wing_rows, wing_cols = np.nonzero(near)
            _, wing_fraction, wing_variance = width_profile(charge[window][wing_rows, wing_cols], wing_rows,
                                                            wing_cols, core=own[wing_rows, wing_cols])
            if length >= 15:
                for name, f, v in (("labels", fraction, variance),
                                   ("trimmed core and wings", wing_fraction, wing_variance)):
                    profiles[name][0].append(f)
                    profiles[name][1].append(v)
    for fractions, variances in profiles.values():
        assert len(fractions) > 50
        a, b, a_err, b_err = fit_diffusion(np.concatenate(fractions), np.concatenate(variances))
        assert a == pytest.approx(config.clusters.diffusion_a_um2, rel=0.10)
        assert b == pytest.approx(config.clusters.diffusion_b_per_um, rel=0.10)
