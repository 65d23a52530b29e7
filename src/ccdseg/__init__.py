"""ccdseg: find particle clusters, glow and hot pixels in CCD images.

The pipeline runs one way: :func:`simulate_image` -> :mod:`ccdseg.dataset` -> :func:`train`
-> model file -> :func:`segment` -> labels -> :func:`find_clusters` -> report. The network
functions (:func:`load_model`, :func:`segment`, :func:`train`) import PyTorch when first used,
so simulation, FITS I/O, the catalog and the classical baseline stay light.
"""

__version__ = "0.1.0"

from ccdseg.catalog import estimate_gain, find_clusters, find_sections  # noqa: E402
from ccdseg.classes import BACKGROUND, CLUSTER, COLORS, GLOWING, HOT_PIXEL, IGNORE, NAMES  # noqa: E402
from ccdseg.classical import segment_classical  # noqa: E402
from ccdseg.config import SimConfig, load_config  # noqa: E402
from ccdseg.io import read_images  # noqa: E402
from ccdseg.pipeline import process_file, process_files  # noqa: E402
from ccdseg.simulate import Simulation, iter_simulations, simulate_image  # noqa: E402

#: Public names provided by the torch-based modules, imported on first use.
_LAZY = {"load_model": "ccdseg.model", "save_model": "ccdseg.model", "build_model": "ccdseg.model",
         "segment": "ccdseg.predict", "train": "ccdseg.train"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'ccdseg' has no attribute {name!r}")


__all__ = ["BACKGROUND", "GLOWING", "HOT_PIXEL", "CLUSTER", "IGNORE", "NAMES", "COLORS", "SimConfig",
           "Simulation", "load_config", "simulate_image", "iter_simulations", "read_images", "find_clusters",
           "find_sections", "estimate_gain", "segment_classical", "process_file", "process_files", *_LAZY]
