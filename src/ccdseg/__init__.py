"""ccdseg: find particle clusters, glow and hot pixels in CCD images.

The pipeline runs one way: :func:`simulate_image` -> :mod:`ccdseg.nn.dataset` -> :func:`train`
-> model file -> :func:`segment` -> labels -> :func:`find_clusters` -> report. Every public
name is imported on first use, so ``import ccdseg`` (and ``ccdseg --help``) loads neither
PyTorch nor SciPy, astropy or matplotlib.
"""

import importlib

from ccdseg._version import __version__
from ccdseg.classes import BACKGROUND, CLUSTER, COLORS, GLOWING, HOT_PIXEL, IGNORE, NAMES

#: Public name -> module that defines it.
_LAZY = {
    "estimate_gain": "ccdseg.calib.gain", "resolve_gain": "ccdseg.calib.gain",
    "find_segments": "ccdseg.calib.amplifiers", "subtract_zero": "ccdseg.calib.baseline",
    "find_clusters": "ccdseg.measure.catalog", "find_sections": "ccdseg.measure.sections",
    "segment_classical": "ccdseg.measure.classical",
    "build_mask": "ccdseg.measure.mask", "search_products": "ccdseg.measure.summary",
    "fit_dark": "ccdseg.measure.dark", "find_low_energy_events": "ccdseg.measure.low_energy",
    "build_run_mask": "ccdseg.measure.run_mask", "simulate_run": "ccdseg.sim.run",
    "measure_frame": "ccdseg.measure.frame_stats", "fit_point_gaussian": "ccdseg.measure.psf_fit",
    "fit_point_gaussians": "ccdseg.measure.psf_fit",
    "fit_like": "ccdseg.measure.like", "fit_like_file": "ccdseg.measure.like", "write_like": "ccdseg.measure.like",
    "SimConfig": "ccdseg.sim.config", "load_config": "ccdseg.sim.config",
    "Simulation": "ccdseg.sim.simulate", "simulate_image": "ccdseg.sim.simulate",
    "iter_simulations": "ccdseg.sim.simulate",
    "read_images": "ccdseg.io.fits",
    "ProcessOptions": "ccdseg.pipeline.job", "process_file": "ccdseg.pipeline.job",
    "process_files": "ccdseg.pipeline.job",
    "load_model": "ccdseg.nn.model", "save_model": "ccdseg.nn.model", "build_model": "ccdseg.nn.model",
    "segment": "ccdseg.infer.predict", "train": "ccdseg.nn.train", "average_models": "ccdseg.nn.average",
    "resolve_objects": "ccdseg.measure.objects", "classify_kinds": "ccdseg.measure.kinds",
    "split_clusters": "ccdseg.measure.split",
    "particle_columns": "ccdseg.measure.particles", "depth_from_sigma": "ccdseg.measure.diffusion",
    "fit_diffusion": "ccdseg.measure.diffusion", "calibrate_diffusion": "ccdseg.pipeline.diffusion",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ccdseg' has no attribute {name!r}")


__all__ = ["__version__", "BACKGROUND", "GLOWING", "HOT_PIXEL", "CLUSTER", "IGNORE", "NAMES", "COLORS", *_LAZY]
