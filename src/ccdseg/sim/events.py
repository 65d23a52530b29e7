"""Ionisation events as charge deposits: point-like hits, electron worms, muon tracks, alphas.

Every generator returns a :class:`Deposits`: steps of charge at a 3-D position (x, y in
pixels, z = depth from the pixel gates in µm), each tagged with the index of its event,
plus one row of truth per event. :func:`diffuse` then spreads each step's electrons
laterally by σ(z) and bins them into pixels.
"""

from dataclasses import dataclass

import numpy as np

#: Kinds of event, as written in the truth catalog.
KINDS = ("point", "worm", "muon", "alpha")

# Largest charge one diffusion sample may carry (e-): with ``clusters.max_packets`` samples per step
# at most, single electrons are drawn one by one up to that many, bigger deposits in packets, which
# keeps a full frame with muons and alphas to a few million samples.
_MAX_PACKET_E = 500.0

_STEP_UM = 5.0       # length of one deposit step along worm and muon paths (µm)
_SI_DENSITY = 2.33   # g/cm³


@dataclass
class Deposits:
    """Charge steps of a set of events and one truth row per event."""

    x: np.ndarray          # column of each step (px, pixel centres at integers)
    y: np.ndarray          # row of each step (px)
    z: np.ndarray          # depth from the gates (µm)
    electrons: np.ndarray  # charge of each step (e-)
    event: np.ndarray      # index of the step's event in the truth arrays
    extra_sigma: np.ndarray  # lateral spread added to diffusion (px), e.g. an alpha's plasma
    kind: np.ndarray       # per event: index into KINDS
    energy_ev: np.ndarray  # per event: deposited energy (eV)
    depth_um: np.ndarray   # per event: depth of the first step (µm)

    @classmethod
    def concatenate(cls, parts):
        """One set of deposits from several, their event indices renumbered to stay distinct."""
        offsets = np.cumsum([0] + [len(p.kind) for p in parts[:-1]])
        steps = {name: np.concatenate([getattr(p, name) for p in parts])
                 for name in ("x", "y", "z", "electrons", "extra_sigma", "kind", "energy_ev", "depth_um")}
        events = [p.event + offset for p, offset in zip(parts, offsets, strict=True)]
        steps["event"] = np.concatenate(events).astype(np.int64)
        return cls(**steps)


def _deposits(kind, x, y, z, electrons, event, energy_ev, depth_um, extra_sigma=None):
    n = len(energy_ev)
    return Deposits(x=np.asarray(x, float), y=np.asarray(y, float), z=np.asarray(z, float),
                    electrons=np.asarray(electrons, float), event=np.asarray(event, np.int64),
                    extra_sigma=np.zeros(len(x)) if extra_sigma is None else np.asarray(extra_sigma, float),
                    kind=np.full(n, KINDS.index(kind), np.int64),
                    energy_ev=np.asarray(energy_ev, float), depth_um=np.asarray(depth_um, float))


def diffusion_sigma_um(depth_um, a_um2, b_per_um):
    """Lateral diffusion σ(z) = sqrt(-A ln(1 - b z)) of charge created at depth z (µm).

    DAMIC: A = 216.2 µm², b = 8.86e-4 /µm (arXiv:1607.07410); σ ≈ 14 µm (0.94 px) at the back.
    """
    return np.sqrt(-a_um2 * np.log1p(-b_per_um * np.asarray(depth_um, float)))


def fano_electrons(energy_ev, ev_per_pair, fano, rng):
    """Number of electron-hole pairs of a deposit: Gaussian with variance F·E/ε, at least 1."""
    mean = np.asarray(energy_ev, float) / ev_per_pair
    return np.maximum(np.rint(rng.normal(mean, np.sqrt(fano * mean))), 1.0)


def point_events(n, shape, clusters, thickness_um, rng):
    """Diffusion-limited point deposits: X-ray lines and a log-uniform continuum."""
    lo, hi = clusters.point_energy_ev
    energy = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    if clusters.xray_fraction > 0:
        line = rng.random(n) < clusters.xray_fraction
        energy[line] = rng.choice(np.asarray(clusters.xray_lines_ev, float), line.sum())
    electrons = fano_electrons(energy, clusters.ev_per_pair, clusters.fano, rng)
    z = rng.uniform(0, thickness_um, n)
    y, x = rng.uniform(-0.5, shape[0] - 0.5, n), rng.uniform(-0.5, shape[1] - 0.5, n)
    return _deposits("point", x, y, z, electrons, np.arange(n), energy, z)


# Mass attenuation coefficient of silicon (cm²/g) against photon energy (keV), NIST XCOM; the K edge
# at 1.8389 keV splits the table into two branches interpolated log-log.
_SI_MU_BELOW_K = ((1.0, 1570.0), (1.5, 535.5), (1.8389, 309.2))
_SI_MU_ABOVE_K = ((1.8389, 3192.0), (2.0, 2777.0), (3.0, 978.4), (4.0, 452.9), (5.0, 245.0), (6.0, 147.0),
                  (8.0, 64.68), (10.0, 33.89), (15.0, 10.34), (20.0, 4.464))


def attenuation_length_um(energy_ev):
    """Attenuation length of X-rays in silicon (µm): 12 µm at 1.74 keV, 28 µm at 5.9 keV, 67 µm at 8.05 keV."""
    kev = np.asarray(energy_ev, float) / 1e3
    mu = np.empty_like(kev)
    for branch, select in ((_SI_MU_BELOW_K, kev < 1.8389), (_SI_MU_ABOVE_K, kev >= 1.8389)):
        e, m = np.log(np.array(branch)).T
        mu[select] = np.exp(np.interp(np.log(kev[select]), e, m))
    return 1e4 / (mu * _SI_DENSITY)


def fe55_events(n, shape, clusters, thickness_um, rng):
    """⁵⁵Fe X-rays (Mn Kα and Kβ) entering from the back: absorbed at an exponential depth from the back surface.

    The depth below the back follows each line's attenuation length, truncated to the silicon: an
    X-ray that crosses the whole thickness leaves nothing and is not one of the ``n``.
    """
    energy = np.where(rng.random(n) < clusters.fe55_kbeta_fraction, clusters.fe55_lines_ev[1],
                      clusters.fe55_lines_ev[0])
    length = attenuation_length_um(energy)
    # inverse CDF of the exponential truncated to [0, thickness]
    from_back = -length * np.log1p(-rng.random(n) * -np.expm1(-thickness_um / length))
    z = thickness_um - from_back
    electrons = fano_electrons(energy, clusters.ev_per_pair, clusters.fano, rng)
    y, x = rng.uniform(-0.5, shape[0] - 0.5, n), rng.uniform(-0.5, shape[1] - 0.5, n)
    return _deposits("point", x, y, z, electrons, np.arange(n), energy, z)


def electron_range_um(energy_ev):
    """CSDA range of an electron in silicon (µm), Katz-Penfold: R = 0.412 E^(1.265-0.0954 ln E) g/cm², E in MeV."""
    e_mev = np.asarray(energy_ev, float) / 1e6
    return 0.412 * e_mev ** (1.265 - 0.0954 * np.log(e_mev)) / _SI_DENSITY * 1e4


def worm_events(n, shape, clusters, thickness_um, pixel_um, rng):
    """Electrons above ~100 keV: multiple-scattering walks that deposit charge along the way.

    Each walk takes steps of 5 µm in a direction that scatters more as the electron slows
    down; it stops when the range is used up or it leaves the silicon (then only the charge
    deposited inside counts).
    """
    lo, hi = clusters.worm_energy_ev
    energy = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    n_steps = np.maximum(np.ceil(electron_range_um(energy) / _STEP_UM).astype(int), 1)
    width = n_steps.max() if n else 0
    step_index = np.arange(width)
    alive = step_index[None, :] < n_steps[:, None]
    # scattering angle per step grows as the remaining energy falls (Highland-like 1/E)
    remaining = np.clip(1.0 - step_index[None, :] / n_steps[:, None], 0.05, 1.0)
    theta = np.abs(rng.normal(0.0, 0.25 / remaining))
    phi = rng.uniform(0, 2 * np.pi, (n, width))
    direction = _random_unit_vectors(n, rng)
    directions = np.empty((n, width, 3))
    for k in range(width):  # a walk is sequential in its steps; vectorised across events
        direction = _scatter(direction, theta[:, k], phi[:, k])
        directions[:, k] = direction
    start = np.stack([rng.uniform(-0.5, shape[1] - 0.5, n) * pixel_um,
                      rng.uniform(-0.5, shape[0] - 0.5, n) * pixel_um,
                      rng.uniform(0, thickness_um, n)], axis=1)
    path = start[:, None, :] + np.cumsum(directions * _STEP_UM, axis=1) - directions * _STEP_UM / 2
    inside = (path[..., 2] >= 0) & (path[..., 2] <= thickness_um)
    alive &= np.cumprod(inside, axis=1).astype(bool)  # once out of the silicon, it is gone
    electrons_per_step = fano_electrons(energy, clusters.ev_per_pair, clusters.fano, rng) / n_steps
    event, step = np.nonzero(alive)
    electrons = electrons_per_step[event]
    deposited = energy * alive.sum(axis=1) / n_steps  # a walk that leaves the silicon takes energy with it
    p = path[event, step]
    return _deposits("worm", p[:, 0] / pixel_um, p[:, 1] / pixel_um, p[:, 2], electrons, event,
                     deposited, start[:, 2])


def _random_unit_vectors(n, rng):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _scatter(direction, theta, phi):
    """Turn each unit vector by polar angle theta around it, at azimuth phi."""
    helper = np.where(np.abs(direction[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    u = np.cross(direction, helper)
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    w = np.cross(direction, u)
    return (direction * np.cos(theta)[:, None]
            + (u * np.cos(phi)[:, None] + w * np.sin(phi)[:, None]) * np.sin(theta)[:, None])


def muon_events(n, shape, clusters, thickness_um, pixel_um, rng):
    """Straight minimum-ionising tracks through the whole thickness.

    The zenith angle follows the flux through a horizontal surface, ∝ cos³θ, so the
    projected length is 45·tanθ px for a 675 µm CCD; the charge per µm of path is fixed
    and the track widens with depth as σ(z) grows.
    """
    cos_theta = np.clip(rng.random(n) ** 0.25, 0.02, 1.0)
    tan_theta = np.sqrt(1 - cos_theta ** 2) / cos_theta
    phi = rng.uniform(0, 2 * np.pi, n)
    path_um = thickness_um / cos_theta
    n_steps = np.maximum(np.ceil(path_um / _STEP_UM).astype(int), 1)
    event = np.repeat(np.arange(n), n_steps)
    first = np.repeat(np.cumsum(n_steps) - n_steps, n_steps)
    fraction = (np.arange(event.size) - first + 0.5) / n_steps[event]
    z = fraction * thickness_um
    length_px = thickness_um * tan_theta / pixel_um
    x0 = rng.uniform(-0.5, shape[1] - 0.5, n)
    y0 = rng.uniform(-0.5, shape[0] - 0.5, n)
    x = x0[event] + fraction * length_px[event] * np.cos(phi[event])
    y = y0[event] + fraction * length_px[event] * np.sin(phi[event])
    electrons = clusters.muon_e_per_um * path_um[event] / n_steps[event]
    deposited = clusters.muon_e_per_um * path_um * clusters.ev_per_pair
    return _deposits("muon", x, y, z, electrons, event, deposited, np.zeros(n))


def alpha_events(n, shape, clusters, thickness_um, rng):
    """~5 MeV alphas from either surface: ~1.4e6 e- in a round blob that saturates and bleeds."""
    lo, hi = clusters.alpha_energy_ev
    energy = rng.uniform(lo, hi, n)
    electrons = fano_electrons(energy, clusters.ev_per_pair, clusters.fano, rng)
    z = np.where(rng.random(n) < 0.5, 10.0, thickness_um - 10.0)  # stopped within ~25 µm of a surface
    spread = rng.uniform(*clusters.alpha_sigma_px, n)
    y, x = rng.uniform(-0.5, shape[0] - 0.5, n), rng.uniform(-0.5, shape[1] - 0.5, n)
    return _deposits("alpha", x, y, z, electrons, np.arange(n), energy, z, spread)


def diffuse(deposits, shape, clusters, pixel_um, rng):
    """Spread every step's electrons by σ(z) and bin them into pixels.

    Returns
    -------
    pixel : ndarray of int64
        Flat pixel index of each diffused sample (samples outside the image dropped).
    charge : ndarray of float
        Electrons carried by each sample.
    event : ndarray of int64
        Event index of each sample.
    """
    n_e = deposits.electrons
    packets = np.minimum(np.ceil(n_e), np.maximum(clusters.max_packets, np.ceil(n_e / _MAX_PACKET_E))).astype(
        np.int64)
    packets = np.maximum(packets, 1)
    step = np.repeat(np.arange(n_e.size), packets)
    charge = (n_e / packets)[step]
    sigma_px = np.hypot(diffusion_sigma_um(deposits.z, clusters.diffusion_a_um2, clusters.diffusion_b_per_um)
                        / pixel_um, deposits.extra_sigma)[step]
    col = np.floor(deposits.x[step] + 0.5 + rng.normal(0, 1, step.size) * sigma_px).astype(np.int64)
    row = np.floor(deposits.y[step] + 0.5 + rng.normal(0, 1, step.size) * sigma_px).astype(np.int64)
    keep = (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
    return row[keep] * shape[1] + col[keep], charge[keep], deposits.event[step[keep]]
