"""The options of the file job, checked once before any file is touched."""

import dataclasses
from dataclasses import dataclass

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
        Network tile side (px).
    cluster_threshold : float, optional
        Cluster probability from which a pixel is a cluster (network method; default the most
        probable class, see :func:`ccdseg.infer.predict.decide`).
    overwrite : bool
        Replace existing outputs.
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
    objects: bool = True

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
            raise ConfigError(f"tile_size must be a positive number of pixels, got {self.tile_size!r}")
        object.__setattr__(self, "gain", check_gain(self.gain))
        if self.find is not None:
            try:
                object.__setattr__(self, "find", class_id(self.find))
            except ValueError as error:
                raise ConfigError(f"find: {error}") from None

    def replace(self, **changes):
        """A copy with ``changes`` applied and checked."""
        return dataclasses.replace(self, **changes)
