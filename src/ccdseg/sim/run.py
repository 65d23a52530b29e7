"""A run of frames of one detector: the same defects in every frame, new events and dark charge in each."""

import copy

import numpy as np

from ccdseg.classes import CLUSTER, HOT_PIXEL
from ccdseg.sim import artefacts
from ccdseg.sim.config import load_config, validate
from ccdseg.sim.simulate import poisson_where_positive, simulate_image


def simulate_run(config=None, n_frames=20, *, seed=0):
    """Simulate ``n_frames`` frames of one detector whose defects stay where they are.

    The defects (hot pixels, columns, rows, streaks of ``config.hot``) are drawn once; every frame
    is :func:`ccdseg.sim.simulate.simulate_image` without defects of its own, plus a Poisson draw of
    the run's defect charge (labelled hot pixel where no cluster is).

    Parameters
    ----------
    config : SimConfig or str, optional
        Configuration or preset name (default ``damic``).
    n_frames : int
        Frames of the run.
    seed : int
        Seed of the run; the same seed gives the same frames.

    Returns
    -------
    list of Simulation
        ``charge["hot_expected"]`` is the run's defect map in every frame.
    """
    config = load_config(config) if isinstance(config, str) or config is None else validate(config)
    det = config.detector
    rng = np.random.default_rng(seed)
    active = (det.height, det.width - det.prescan_columns - det.overscan_columns)
    defects = np.zeros((det.height, det.width))
    defects[:, det.prescan_columns:det.prescan_columns + active[1]] = artefacts.hot_pixel_map(active, config.hot, rng)
    quiet = copy.deepcopy(config)
    quiet.hot.pixels_per_mpix, quiet.hot.columns, quiet.hot.rows = (0.0, 0.0), (0, 0), (0, 0)
    quiet.hot.streaks_per_mpix = (0.0, 0.0)
    frames = []
    for frame_seed in np.random.SeedSequence(seed).spawn(n_frames):
        frame_rng = np.random.default_rng(frame_seed)
        simulation = simulate_image(quiet, rng=frame_rng)
        hot = poisson_where_positive(defects, frame_rng)
        simulation.image = (simulation.image + det.gain_adu_per_e * hot).astype(np.float32)
        simulation.labels[(defects > 0) & (simulation.labels != CLUSTER)] = HOT_PIXEL
        simulation.charge["hot"] = hot.astype(np.float32)
        simulation.charge["hot_expected"] = defects.astype(np.float32)
        simulation.config = config
        frames.append(simulation)
    return frames
