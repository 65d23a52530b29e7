"""ccdseg: find particle clusters, glow and hot pixels in CCD images."""

__version__ = "0.1.0"
