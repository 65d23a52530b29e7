"""The options of the file job, checked once before any file is touched."""

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ccdseg.calib.amplifiers import parse_layout
from ccdseg.calib.gain import check_gain
from ccdseg.classes import class_id
from ccdseg.errors import ConfigError
from ccdseg.infer import ENGINES, PRECISIONS, TILE_SIZE

#: Segmentation methods: the U-Net, or the thresholding baseline of :mod:`ccdseg.measure.classical`.
METHODS = ("network", "classical")


@dataclass(frozen=True)
class ProcessOptions:
    """What :func:`ccdseg.pipeline.job.process_file` does with each file.

    Attributes
    ----------
    method : {"network", "classical"}
        The U-Net, or the classical thresholding baseline.
    hdu : str or int, optional
        Only this image HDU (EXTNAME or index); default every image HDU.
    probabilities : bool
        Also write the class probabilities (network method only).
    find : str or int, optional
        Class whose regions are listed and drawn (name or id); stored as the class id.
    gain : float, optional
        Gain in ADU/e-; default the header's ``GAIN``, else measured
        (:func:`ccdseg.calib.gain.resolve_gain`).
    device : str
        Torch device of the network.
    engine : {"torch", "onnx"}
        Run the network with PyTorch or ONNX Runtime.
    precision : {"bf16", "fp32"}, optional
        Network arithmetic; default bf16 for the torch engine and fp32 for onnx (its only one).
    tile_size : int
        Network tile side (px): a positive multiple of what the model needs (``2**depth``,
        8 px for the shipped model), checked when the model is loaded; never rounded.
    cluster_threshold : float, optional
        Cluster probability from which a pixel is a cluster (network method; default the most
        probable class, see :func:`ccdseg.infer.predict.decide`).
    overwrite : bool
        Replace existing outputs.
    skip_existing : bool
        Skip the files whose outputs all exist and are complete: those that the run log of the
        output directory lists as done (without reading them again), and those whose complete
        set of outputs a stopped run wrote but did not log (resume an interrupted batch).
    run_mask : str or Path, optional
        Run-level defect map (``ccdseg mask``) applied to every image: its defects are masked and
        relabelled (:func:`ccdseg.measure.run_mask.apply_run_mask`).
    amplifiers : str
        Amplifier segments normalised each on its own: "auto" (from the header, else from the pedestal
        steps of the data), "none" (one segment) or "COLSxROWS" such as "2x2" (an even grid); see
        :func:`ccdseg.calib.amplifiers.find_segments`.
    particles : bool
        Fill the catalogue's particle columns (kind, point fit, muon track) when the gain is known.
        The point fits cost ~13 ms per point-like cluster; False skips them for bulk runs.
    diffusion : (float, float), optional
        A (µm²) and b (1/µm) of the detector's diffusion law σ²(z) = -A ln(1 - b z), which turns a point's
        fitted width into its depth (``depth_um``); fit it with ``ccdseg calibrate-diffusion``. Default
        DAMIC's (:data:`ccdseg.measure.diffusion.DAMIC_A_UM2`, ``DAMIC_B_PER_UM``).
    objects : bool
        Make the labels consistent objects (:func:`ccdseg.measure.objects.resolve_objects`) before the
        catalogue: on the benchmark set it raises the hot-pixel and cluster F1 and lowers no class.

    Raises
    ------
    ConfigError
        On any invalid value or combination, when the options are made.
    """

    method: str = "network"
    hdu: str | int | None = None
    probabilities: bool = False
    find: str | int | None = None
    gain: float | None = None
    device: str = "cpu"
    engine: str = "torch"
    precision: str | None = None
    tile_size: int = TILE_SIZE
    cluster_threshold: float | None = None
    overwrite: bool = False
    skip_existing: bool = False
    run_mask: str | Path | None = None
    amplifiers: str = "auto"
    objects: bool = True
    particles: bool = True
    diffusion: tuple | None = None

    def __post_init__(self):
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        precision = self.precision or ("fp32" if self.engine == "onnx" else "bf16")
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if self.engine == "onnx" and precision != "fp32":
            raise ConfigError("the onnx engine runs in fp32 only")
        object.__setattr__(self, "precision", precision)
        network_only = {"probabilities": self.probabilities, "cluster_threshold": self.cluster_threshold is not None}
        for name, given in network_only.items():
            if given and self.method != "network":
                raise ConfigError(f"{name} needs method 'network' (the classical method has no probabilities)")
        if self.cluster_threshold is not None and not 0 < self.cluster_threshold <= 1:
            raise ConfigError(f"cluster_threshold must be in (0, 1], got {self.cluster_threshold!r}")
        if isinstance(self.tile_size, bool) or not isinstance(self.tile_size, int) or self.tile_size < 1:
            raise ConfigError(f"tile size must be a positive whole number of pixels, got {self.tile_size!r}")
        object.__setattr__(self, "gain", check_gain(self.gain))
        if self.diffusion is not None:
            law = tuple(self.diffusion)
            if len(law) != 2 or not all(isinstance(v, (int, float)) and np.isfinite(v) and v > 0 for v in law):
                raise ConfigError(f"diffusion must be two positive numbers (A in um^2, b in 1/um), got "
                                  f"{self.diffusion!r}")
            object.__setattr__(self, "diffusion", tuple(float(v) for v in law))
        if self.run_mask is not None and not Path(self.run_mask).is_file():
            raise ConfigError(f"run_mask: {self.run_mask}: no such file")
        parse_layout(self.amplifiers)
        if self.find is not None:
            try:
                object.__setattr__(self, "find", class_id(self.find))
            except ValueError as error:
                raise ConfigError(f"find: {error}") from None

    def check_tile_size(self, multiple):
        """Refuse a tile size that is not a multiple of ``multiple`` px (the model's ``2**depth``).

        Raises
        ------
        ConfigError
            Naming the tile size, the multiple and the nearest valid sizes.
        """
        if self.tile_size % multiple:
            lower, upper = self.tile_size // multiple * multiple, -(-self.tile_size // multiple) * multiple
            nearest = f"{lower} or {upper}" if lower else f"{upper}"
            raise ConfigError(f"tile size {self.tile_size} px is not a multiple of {multiple} px, as the model needs "
                              f"(it halves the tile {multiple.bit_length() - 1} times): use e.g. {nearest}")

    def replace(self, **changes):
        """A copy with ``changes`` applied and checked."""
        return dataclasses.replace(self, **changes)
