"""Physical measurements per cluster: particle kind, the point fit (energy, width, depth) and muon tracks.

:func:`particle_columns` gives the catalogue's particle columns (:data:`PARTICLE_COLUMNS`) for every
cluster of a labelled image in electrons; NaN where a measurement does not apply (the point fit for
points only, the track measurements for muons only) or without the gain.
"""

import numpy as np
from scipy import ndimage

from ccdseg.measure.diffusion import PIXEL_UM, THICKNESS_UM, depth_from_sigma, track_axis
from ccdseg.measure.kinds import KINDS, classify_kinds
from ccdseg.measure.psf_fit import fit_components
from ccdseg.sim.config import ClusterConfig

#: Particle columns of the catalogue: name -> (unit, description).
PARTICLE_COLUMNS = {
    "kind": (None, "particle kind: point, electron, muon or alpha (empty without gain and for low-energy events)"),
    "kind_prob": (None, "probability of the kind"),
    **{f"p_{kind}": (None, f"probability that the cluster is a {kind}") for kind in KINDS},
    "fit_energy_ev": ("eV", "point fit: energy of the pixel-integrated 2-D Gaussian (points only)"),
    "fit_energy_err_ev": ("eV", "its 1-sigma uncertainty"),
    "fit_sigma_x": ("pix", "point fit: Gaussian width along x"),
    "fit_sigma_x_err": ("pix", "its 1-sigma uncertainty"),
    "fit_sigma_y": ("pix", "point fit: Gaussian width along y"),
    "fit_sigma_y_err": ("pix", "its 1-sigma uncertainty"),
    "depth_um": ("um", "depth from the gates, from sqrt(fit_sigma_x fit_sigma_y) by the diffusion law"),
    "depth_err_um": ("um", "its 1-sigma uncertainty"),
    "muon_length_um": ("um", "muon: projected track length"),
    "muon_zenith_deg": ("deg", "muon: zenith angle, atan(length / thickness)"),
    "muon_azimuth_deg": ("deg", "muon: azimuth of the track in the image, from +x towards +y, in [0, 180)"),
    "muon_dedx_kev_per_um": ("keV/um", "muon: deposited energy per um of 3-D path"),
}
#: Largest point-like cluster that is fitted (px).
_MAX_FIT_PIXELS = 400
_MARGIN = 2


def particle_columns(charge_image, components, n, *, noise_e, ev_per_pair=ClusterConfig.ev_per_pair, pixel_um=PIXEL_UM,
                     thickness_um=THICKNESS_UM, diffusion=None, kind_model=None):
    """Particle columns of every cluster.

    Parameters
    ----------
    charge_image : ndarray (H, W)
        Pedestal-subtracted image in electrons.
    components : ndarray (H, W) of int
        Cluster number of each pixel, 1..n, 0 elsewhere.
    n : int
        Number of clusters.
    noise_e : float
        Pixel noise (e-), readout and dark shot noise together; weights the point fit.
    ev_per_pair : float
        Energy per electron-hole pair (eV).
    pixel_um, thickness_um : float
        Pixel pitch and CCD thickness (µm).
    diffusion : (float, float), optional
        A (µm²) and b (1/µm) of the diffusion law; default DAMIC's.
    kind_model : KindModel, optional
        Default the shipped one.

    Returns
    -------
    dict of str -> ndarray (n,)
        The columns of :data:`PARTICLE_COLUMNS`.
    """
    columns = {name: np.full(n, np.nan) for name in PARTICLE_COLUMNS}
    kind, probabilities = classify_kinds(charge_image, components, n, model=kind_model)
    columns["kind"] = kind
    columns["kind_prob"] = probabilities.max(axis=1) if n else np.zeros(0)
    for index, name in enumerate(KINDS):
        columns[f"p_{name}"] = probabilities[:, index]
    boxes = ndimage.find_objects(components, max_label=n)
    points = [index for index in range(n) if kind[index] == "point"
              and np.count_nonzero(components[boxes[index]] == index + 1) <= _MAX_FIT_PIXELS]
    _fit_points(columns, points, charge_image, components, boxes, noise_e, ev_per_pair)
    for index in range(n):
        box = boxes[index]
        if kind[index] == "muon":
            rows, cols = np.nonzero(components[box] == index + 1)
            charge = np.nan_to_num(charge_image[box][rows, cols]).astype(np.float64)
            _measure_muon(columns, index, charge, rows, cols, ev_per_pair, pixel_um, thickness_um)
    a_um2, b_per_um = diffusion or (None, None)
    sigma_um = np.sqrt(columns["fit_sigma_x"] * columns["fit_sigma_y"]) * pixel_um
    sigma_err_um = 0.5 * sigma_um * np.hypot(columns["fit_sigma_x_err"] / columns["fit_sigma_x"],
                                             columns["fit_sigma_y_err"] / columns["fit_sigma_y"])
    law = {} if a_um2 is None else {"a_um2": a_um2, "b_per_um": b_per_um}
    columns["depth_um"], columns["depth_err_um"] = depth_from_sigma(sigma_um, sigma_err_um, **law)
    return columns


def _fit_points(columns, points, charge_image, components, boxes, noise_e, ev_per_pair):
    """The point fit's columns of the clusters ``points`` (0-based), all fitted at once."""
    fits = fit_components(charge_image, components, boxes, [index + 1 for index in points], margin=_MARGIN,
                          noise_e=noise_e)
    for index, fit in zip(points, fits, strict=True):
        columns["fit_energy_ev"][index] = fit.amplitude_e * ev_per_pair
        columns["fit_energy_err_ev"][index] = fit.amplitude_err_e * ev_per_pair
        for name in ("sigma_x", "sigma_y", "sigma_x_err", "sigma_y_err"):
            columns[f"fit_{name}"][index] = getattr(fit, name)


def _measure_muon(columns, index, charge, rows, cols, ev_per_pair, pixel_um, thickness_um):
    length_um, direction, dedx = track_measures(charge, rows, cols, ev_per_pair=ev_per_pair, pixel_um=pixel_um,
                                                thickness_um=thickness_um)
    columns["muon_length_um"][index] = length_um
    columns["muon_zenith_deg"][index] = np.degrees(np.arctan2(length_um, thickness_um))
    columns["muon_azimuth_deg"][index] = np.degrees(np.arctan2(direction[0], direction[1])) % 180.0
    columns["muon_dedx_kev_per_um"][index] = dedx


def track_measures(charge, rows, cols, *, ev_per_pair=ClusterConfig.ev_per_pair, pixel_um=PIXEL_UM,
                   thickness_um=THICKNESS_UM):
    """Projected length (µm), direction (dy, dx) and energy per µm of 3-D path (keV/µm) of a track through the CCD.

    The 3-D path of a track crossing the whole thickness is hypot(projected length, thickness).
    """
    _, direction, along, _ = track_axis(charge, np.asarray(rows, float), np.asarray(cols, float))
    length_um = (np.ptp(along) + 1.0) * pixel_um
    dedx = np.clip(charge, 0, None).sum() * ev_per_pair / 1e3 / np.hypot(length_um, thickness_um)
    return length_um, direction, dedx
