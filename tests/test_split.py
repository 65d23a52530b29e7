"""Clusters holding several events become one catalogue row per event (ccdseg.measure.split)."""

import numpy as np
import pytest

from ccdseg.classes import BACKGROUND, CLUSTER
from ccdseg.measure.catalog import find_clusters
from ccdseg.measure.psf_fit import integrated_gaussian
from ccdseg.sim.config import ClusterConfig
from ccdseg.sim.events import diffusion_sigma_um

XRAY_E = 1567.0  # 55Fe K-alpha, 5.9 keV


def straight_track(shape, start, stop, charge, rng, samples=20000, sigma=lambda t: 0.3 + 0.9 * t):
    """A track from ``start`` to ``stop`` (row, col) whose diffusion ``sigma(t)`` (px) grows along it, t in [0, 1].

    By default from 0.3 to 1.2 px.
    """
    t = rng.uniform(0, 1, samples)
    sigma = sigma(t)
    y = start[0] + t * (stop[0] - start[0]) + rng.normal(0, 1, samples) * sigma
    x = start[1] + t * (stop[1] - start[1]) + rng.normal(0, 1, samples) * sigma
    image = np.zeros(shape)
    np.add.at(image, (np.rint(y).astype(int), np.rint(x).astype(int)), charge / samples)
    return image


def steep_cone(shape, charge, rng):
    """A steep muon, 10 x 4 px from (10, 10), in a CCD that diffuses as much as DAMIC-M's (A = 530 um^2)."""
    return straight_track(shape, (10, 10), (20, 14), charge, rng, samples=40000,
                          sigma=lambda t: diffusion_sigma_um(675.0 * t, 530.0, 8.86e-4) / 15.0)


def mip_charge(rows, cols):
    """Electrons of a minimum-ionising muon (0.38 keV/um) crossing 675 um of silicon over rows x cols px."""
    return 0.38e3 * np.hypot(np.hypot(rows, cols) * 15.0, 675.0) / 3.77


def catalogue(image, rng, **options):
    image = image + rng.normal(0, 0.2, image.shape)
    return find_clusters(image, np.where(image > 2, CLUSTER, BACKGROUND).astype(np.uint8), gain=1.0, pedestal=0.0,
                         **options)


def test_touching_xrays_become_two_points():
    rng = np.random.default_rng(1)
    image = np.zeros((30, 30))
    image[5:18, 5:18] += integrated_gaussian((13, 13), XRAY_E, 6.0, 6.0, 1.3, 1.3)
    image[5:18, 9:22] += integrated_gaussian((13, 13), XRAY_E, 6.2, 6.3, 1.3, 1.3)
    image = rng.poisson(image).astype(float)
    assert len(catalogue(image, np.random.default_rng(2), particles=False)) == 1  # one connected cluster
    table = catalogue(image, np.random.default_rng(2))
    assert list(table["kind"]) == ["point", "point"]
    np.testing.assert_allclose(table["charge_e"], XRAY_E, rtol=0.1)
    # fitted together: neither takes the other's spilled charge for its own (alone: 12-17 % high, 0.15 px wide)
    np.testing.assert_allclose(table["fit_energy_ev"] / ClusterConfig.ev_per_pair, XRAY_E, rtol=0.06)
    np.testing.assert_allclose(np.sqrt(table["fit_sigma_x"] * table["fit_sigma_y"]), 1.3, rtol=0.06)


def test_track_and_the_electron_beside_it_become_two_rows():
    rng = np.random.default_rng(1)
    charge = mip_charge(30, 50)
    image = straight_track((60, 80), (10, 10), (40, 60), charge, rng)
    # a 226 keV electron stopping 5 px beside the middle of the track, centred at (20.7, 37.6)
    image[12:29, 29:46] += integrated_gaussian((17, 17), 60000.0, 8.6, 8.7, 2.5, 2.5)
    table = catalogue(image, rng)
    by_kind = dict(zip(table["kind"], table["charge_e"], strict=True))
    assert sorted(by_kind) == ["electron", "muon"]
    assert by_kind["muon"] == pytest.approx(charge, rel=0.05)
    assert by_kind["muon"] + by_kind["electron"] == pytest.approx(charge + 60000.0, rel=0.01)


def test_a_lone_track_and_a_lone_point_stay_whole():
    rng = np.random.default_rng(3)
    image = straight_track((60, 80), (10, 10), (40, 60), mip_charge(30, 50), rng)
    image[5:18, 60:73] += rng.poisson(integrated_gaussian((13, 13), XRAY_E, 6.0, 6.0, 1.3, 1.3))
    table = catalogue(image, rng)
    assert sorted(table["kind"]) == ["muon", "point"]



def test_a_steep_muon_and_the_points_beside_it_become_rows_of_their_own():
    # a steep muon in a CCD that diffuses as much as DAMIC-M's (A = 530 um^2: 1.5 px at the back) is a short
    # cone, sharp only at its front end and too wide for the track split's band; its smoothed charge peaks
    # once, at the narrow end, and each point beside it has a peak of its own
    rng = np.random.default_rng(4)
    charge = mip_charge(10, 4)
    image = steep_cone((40, 40), charge, rng)
    point = integrated_gaussian((13, 13), 2500.0, 6.0, 6.0, 1.4, 1.4)  # 9.4 keV
    for row, col in ((19, 20), (13, 24)):
        image[row - 6:row + 7, col - 6:col + 7] += rng.poisson(point)
    whole = catalogue(image, np.random.default_rng(5), particles=False)
    assert np.count_nonzero(whole["charge_e"] > 100) == 1  # one connected cluster (and specks of noise)
    table = catalogue(image, np.random.default_rng(5))
    table = table[table["charge_e"] > 100]
    assert sorted(table["kind"]) == ["muon", "point", "point"]
    assert table["charge_e"][table["kind"] == "muon"][0] == pytest.approx(charge, rel=0.02)
    np.testing.assert_allclose(table["charge_e"][table["kind"] == "point"], 2500.0, rtol=0.15)


def test_a_steep_muon_and_the_electron_curling_beside_it_become_two_rows():
    # the steep cone of the test above with a 151 keV electron (40000 e-) curling on a 3 px arc beside it
    rng = np.random.default_rng(4)
    charge = mip_charge(10, 4)
    image = steep_cone((50, 50), charge, rng)
    arc = rng.uniform(0, 1.5 * np.pi, 30000)
    y, x = 16 + 3 * np.sin(arc) + rng.normal(0, 0.6, arc.size), 20 + 3 * np.cos(arc) + rng.normal(0, 0.6, arc.size)
    np.add.at(image, (np.rint(y).astype(int), np.rint(x).astype(int)), 40000.0 / arc.size)
    whole = catalogue(image, np.random.default_rng(5), particles=False)
    assert np.count_nonzero(whole["charge_e"] > 100) == 1  # one connected cluster
    table = catalogue(image, np.random.default_rng(5))
    table = table[table["charge_e"] > 100]
    by_kind = dict(zip(table["kind"], table["charge_e"], strict=True))
    assert sorted(by_kind) == ["electron", "muon"]
    assert by_kind["muon"] == pytest.approx(charge, rel=0.03)
    assert by_kind["electron"] == pytest.approx(40000.0, rel=0.05)
