"""The U-Net that labels every pixel, and the model file that carries it.

A model file holds everything prediction needs: the architecture, the weights, the
normalisation parameters and the class names, plus how the model was trained.
"""

import dataclasses
import importlib.resources
import os
import pathlib

import numpy as np
import torch
from torch import nn

from ccdseg._version import __version__
from ccdseg.classes import N_CLASSES, NAMES
from ccdseg.errors import ConfigError, ModelFileError
from ccdseg.io import atomic_path
from ccdseg.nn.normalize import validate_params

FORMAT = "ccdseg-model"
FORMAT_VERSION = 1
#: Location of the shipped model inside the package.
SHIPPED_MODEL = "data/default_model.pt"

_ACTIVATIONS = {"elu": nn.ELU, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}

#: Keyword arguments of :class:`UNet` and their defaults.
ARCH_DEFAULTS = {
    "in_channels": 1, "n_classes": N_CLASSES, "depth": 4, "base_width": 32,
    "width_multipliers": None, "max_width": None, "activation": "elu", "norm": None,
    "groups": 8, "dropout": 0.0, "upsample": "transpose", "stem_width": 0,
}

#: Named architectures. ``thesis`` is the 2020 thesis network (32 -> 512 filters, 4 poolings,
#: dropout 0.18, 7.76 M parameters); ``default`` is the small, fast network chosen by
#: measurement (16/32/64 filters, 64-channel bottleneck, 0.32 M parameters; ReLU, because
#: ELU took a quarter of its bf16 inference time on the CPU); ``halfres`` runs a 32/64/64
#: U-Net at half resolution between a thin 8-channel full-resolution stem and head
#: (``benchmarks/network_choice.py``: the full-resolution layers are bound by memory traffic).
ARCHITECTURES = {
    "thesis": {"depth": 4, "base_width": 32, "dropout": 0.18},
    "default": {"depth": 3, "base_width": 16, "max_width": 64, "activation": "relu"},
    "halfres": {"depth": 2, "base_width": 32, "max_width": 64, "activation": "relu", "stem_width": 8},
}


def resolve_arch(arch):
    """Complete architecture dict for a preset name or a (partial) dict.

    Parameters
    ----------
    arch : str or dict
        A key of :data:`ARCHITECTURES`, or keyword arguments of :class:`UNet`; a dict may
        name a preset under ``"preset"`` and override some of its values.

    Returns
    -------
    dict
        Every key of :data:`ARCH_DEFAULTS`, validated.

    Raises
    ------
    ConfigError
        On an unknown preset or key, or a value of the wrong type or out of range.
    """
    if isinstance(arch, str):
        arch = {"preset": arch}
    if not isinstance(arch, dict):
        raise ConfigError(f"arch must be a preset name or a dict, got {type(arch).__name__}")
    arch = dict(arch)
    preset = arch.pop("preset", None)
    if preset is not None and preset not in ARCHITECTURES:
        raise ConfigError(f"arch: unknown preset {preset!r} (expected {', '.join(ARCHITECTURES)})")
    unknown = sorted(set(arch) - set(ARCH_DEFAULTS))
    if unknown:
        raise ConfigError(f"arch: unknown parameter {unknown[0]!r} (expected {', '.join(ARCH_DEFAULTS)})")
    full = {**ARCH_DEFAULTS, **ARCHITECTURES.get(preset, {}), **arch}
    for key in ("in_channels", "n_classes", "depth", "base_width", "groups", "stem_width"):
        _check_int(key, full[key], minimum=0 if key in ("depth", "stem_width") else 1)
    if full["max_width"] is not None:
        _check_int("max_width", full["max_width"], minimum=1)
    multipliers = full["width_multipliers"]
    if multipliers is not None:
        if not isinstance(multipliers, (list, tuple)) or len(multipliers) != full["depth"] + 1:
            raise ConfigError(f"arch: width_multipliers must be a list of depth + 1 = {full['depth'] + 1} "
                              f"positive numbers, got {multipliers!r}")
        for value in multipliers:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"arch: width_multipliers must be positive numbers, got {multipliers!r}")
        full["width_multipliers"] = list(multipliers)
    if full["activation"] not in _ACTIVATIONS:
        raise ConfigError(f"arch: activation must be one of {', '.join(_ACTIVATIONS)}, got {full['activation']!r}")
    if full["norm"] not in (None, "batch", "group"):
        raise ConfigError(f"arch: norm must be None, 'batch' or 'group', got {full['norm']!r}")
    if full["upsample"] not in ("transpose", "bilinear"):
        raise ConfigError(f"arch: upsample must be 'transpose' or 'bilinear', got {full['upsample']!r}")
    dropout = full["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"arch: dropout must be a number in [0, 1), got {dropout!r}")
    full["dropout"] = float(dropout)
    return full


def input_multiple(arch):
    """Height and width of the network's input must be multiples of this (px).

    Parameters
    ----------
    arch : str or dict
        See :func:`resolve_arch`.

    Returns
    -------
    int
        ``2**depth``, times 2 for a half-resolution body (``stem_width`` > 0).
    """
    arch = resolve_arch(arch)
    return 2 ** (arch["depth"] + (arch["stem_width"] > 0))


def level_widths(arch):
    """Number of filters at each resolution level, from full resolution to the bottleneck.

    Parameters
    ----------
    arch : str or dict
        See :func:`resolve_arch`.

    Returns
    -------
    list of int
        ``depth + 1`` widths: ``base_width * multiplier`` (multipliers 1, 2, 4, ... by
        default), capped at ``max_width``.
    """
    arch = resolve_arch(arch)
    multipliers = arch["width_multipliers"] or [2 ** level for level in range(arch["depth"] + 1)]
    cap = arch["max_width"] or np.inf
    return [int(min(round(arch["base_width"] * m), cap)) for m in multipliers]


class UNet(nn.Module):
    """U-Net for per-pixel classification (Ronneberger et al. 2015, 'same' padding).

    Each level has two 3x3 convolutions (each followed by the optional normalisation and
    the activation; dropout between them); the encoder halves the resolution with 2x2 max
    pooling ``depth`` times; the decoder upsamples, concatenates the encoder features of the
    same level and applies two 3x3 convolutions; a 1x1 convolution gives the class logits.

    Parameters
    ----------
    in_channels, n_classes : int
        Input channels (1: the normalised image) and output classes.
    depth : int
        Number of poolings; height and width of the input must be multiples of ``2**depth``.
    base_width : int
        Filters at full resolution.
    width_multipliers : list of float, optional
        ``depth + 1`` multipliers of ``base_width`` per level (default 1, 2, 4, ...).
    max_width : int, optional
        Cap on the filters of any level (a narrow bottleneck).
    activation : {"elu", "relu", "silu", "gelu"}
    norm : {None, "batch", "group"}
        Normalisation after each 3x3 convolution (which then has no bias).
    groups : int
        Groups of the group normalisation (reduced until it divides the width).
    dropout : float
        Dropout probability between the two convolutions of each level.
    upsample : {"transpose", "bilinear"}
        2x2 transposed convolution, or bilinear upsampling followed by a 1x1 convolution.
    stem_width : int
        0: the U-Net works at full resolution. Otherwise a 3x3 convolution of this many
        filters works at full resolution, space-to-depth (``pixel_unshuffle``) hands its
        output to the U-Net at half resolution, depth-to-space (``pixel_shuffle``) brings the
        U-Net's last features back, concatenated with the stem's, and two convolutions (3x3 of
        ``2 * stem_width`` filters, then 1x1) give the logits. Cheaper per pixel on the CPU,
        where thin full-resolution layers are bound by memory traffic.
    """

    def __init__(self, **arch):
        super().__init__()
        self.arch = resolve_arch(arch)
        widths = level_widths(self.arch)
        self.depth = self.arch["depth"]
        self.multiple = input_multiple(self.arch)
        block = self._block
        stem = self.arch["stem_width"]
        channels = self.arch["in_channels"]
        if stem:
            self.stem = nn.Sequential(*self._conv(channels, stem))
            channels = 4 * stem  # pixel_unshuffle(2) stacks each 2x2 block into channels
        self.encoder = nn.ModuleList()
        for width in widths:
            self.encoder.append(block(channels, width))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            if self.arch["upsample"] == "transpose":
                self.up.append(nn.ConvTranspose2d(channels, width, kernel_size=2, stride=2))
            else:
                self.up.append(nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear"),
                                             nn.Conv2d(channels, width, kernel_size=1)))
            self.decoder.append(block(2 * width, width))
            channels = width
        if stem:
            # depth-to-space needs 4 * stem channels; concatenated with the stem: 2 * stem
            self.squeeze = nn.Conv2d(channels, 4 * stem, kernel_size=1) if channels != 4 * stem else nn.Identity()
            self.head = nn.Sequential(*self._conv(2 * stem, 2 * stem),
                                      nn.Conv2d(2 * stem, self.arch["n_classes"], kernel_size=1))
        else:
            self.head = nn.Conv2d(channels, self.arch["n_classes"], kernel_size=1)

    def _conv(self, cin, cout):
        """3x3 convolution, optional normalisation, activation."""
        arch = self.arch
        activation = _ACTIVATIONS[arch["activation"]]
        layers = [nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=arch["norm"] is None)]
        if arch["norm"] == "batch":
            layers.append(nn.BatchNorm2d(cout))
        elif arch["norm"] == "group":
            groups = next(g for g in range(min(arch["groups"], cout), 0, -1) if cout % g == 0)
            layers.append(nn.GroupNorm(groups, cout))
        # in place saves one full-size buffer per layer; GELU has no in-place form
        layers.append(activation() if arch["activation"] == "gelu" else activation(inplace=True))
        return layers

    def _block(self, cin, cout):
        """Two 3x3 convolutions, dropout between them."""
        dropout = [nn.Dropout(self.arch["dropout"])] if self.arch["dropout"] > 0 else []
        return nn.Sequential(*self._conv(cin, cout), *dropout, *self._conv(cout, cout))

    def forward(self, x):
        """Class logits (N, n_classes, H, W) for input (N, in_channels, H, W)."""
        multiple = self.multiple
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"input height and width must be multiples of {multiple}, "
                             f"got {tuple(x.shape[-2:])}; pad the image first")
        if self.arch["stem_width"]:
            stem = self.stem(x)
            x = nn.functional.pixel_unshuffle(stem, 2)
        skips = []
        for level, block in enumerate(self.encoder):
            if level:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, block in zip(self.up, self.decoder, strict=True):
            x = block(torch.cat([up(x), skips.pop()], dim=1))
        if self.arch["stem_width"]:
            x = torch.cat([nn.functional.pixel_shuffle(self.squeeze(x), 2), stem], dim=1)
        return self.head(x)


def build_model(arch="default"):
    """Build an untrained :class:`UNet` from a preset name or an architecture dict.

    Parameters
    ----------
    arch : str or dict
        See :func:`resolve_arch`.

    Returns
    -------
    UNet
    """
    return UNet(**resolve_arch(arch))


def count_parameters(net):
    """Number of trainable parameters of a network.

    Parameters
    ----------
    net : torch.nn.Module

    Returns
    -------
    int
    """
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


@dataclasses.dataclass
class Model:
    """A loaded model: the network (in eval mode) and what is needed to apply it.

    Attributes
    ----------
    net : UNet
        The network, on the requested device, in eval mode.
    arch : dict
        Complete architecture (see :func:`resolve_arch`).
    normalization : dict
        Parameters for :func:`ccdseg.nn.normalize.normalize`.
    classes : list of str
        Class names, in the order of the output channels.
    metadata : dict
        Everything else in the file: ``package_version``, ``train_config``, ``metrics``, ``parent``, ...
    path : str
        The file it was loaded from.
    """

    net: UNet
    arch: dict
    normalization: dict
    classes: list
    metadata: dict
    path: str


_RESERVED = ("format", "format_version", "arch", "state_dict", "normalization", "classes")


def save_model(path, net, arch, normalization, **metadata):
    """Write a model file atomically (a temporary file in the same directory, then renamed).

    Parameters
    ----------
    path : str or path-like
        Destination; an existing file is replaced.
    net : torch.nn.Module
        The network; its weights are stored on the CPU.
    arch : str or dict
        Its architecture (see :func:`resolve_arch`); stored complete.
    normalization : dict or None
        Normalisation parameters (see :data:`ccdseg.nn.normalize.DEFAULT_PARAMS`); stored complete.
    **metadata
        Plain values (str, numbers, bool, None, lists and dicts of them; numpy scalars and
        arrays are converted), e.g. ``train_config``, ``metrics``, ``parent``.

    Raises
    ------
    ConfigError
        If ``arch``, ``normalization`` or a metadata value is invalid.
    OutputError
        If the file cannot be written.
    """
    clash = sorted(set(metadata) & set(_RESERVED))
    if clash:
        raise ConfigError(f"save_model: metadata key {clash[0]!r} is reserved")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "arch": _stored_arch(arch),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()},
        "normalization": validate_params(normalization),
        "classes": list(NAMES),
        "package_version": __version__,
    }
    payload.update({key: _loadable(value, key) for key, value in metadata.items()})
    with atomic_path(path, overwrite=True) as temp:
        torch.save(payload, temp)


def load_model(path=None, device="cpu"):
    """Read a model file written by :func:`save_model`.

    Parameters
    ----------
    path : str or path-like, optional
        The model file; None means the model shipped with ccdseg (``ccdseg/data/default_model.pt``).
    device : str or torch.device
        Where to put the network.

    Returns
    -------
    Model

    Raises
    ------
    ModelFileError
        If the file is missing, not a ccdseg model, corrupt or truncated, or its weights do
        not fit its architecture; the message names the file and the reason.
    """
    if path is None:
        path = importlib.resources.files("ccdseg").joinpath(SHIPPED_MODEL)
        if not path.is_file():
            raise ModelFileError(path, "no shipped model is installed; pass the path of a trained model file")
    path = pathlib.Path(str(path))
    if not path.is_file():
        raise ModelFileError(path, "no such file" if not path.exists() else "not a regular file")
    try:
        payload = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types (with cryptic messages) for damaged files
        raise ModelFileError(path, "not a readable PyTorch file (corrupt, truncated or another format)") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ModelFileError(path, "not a ccdseg model file")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelFileError(path, f"format_version {version!r} is not supported "
                                   f"(this ccdseg {__version__} reads version {FORMAT_VERSION})")
    missing = [key for key in _RESERVED if key not in payload]
    if missing:
        raise ModelFileError(path, f"model file lacks {missing[0]!r}")
    try:
        arch = resolve_arch(payload["arch"])
        normalization = validate_params(payload["normalization"])
    except ConfigError as error:
        raise ModelFileError(path, str(error)) from error
    classes = list(payload["classes"])
    if classes != list(NAMES) or arch["n_classes"] != len(classes):
        raise ModelFileError(path, f"classes {classes} do not match this ccdseg's classes {list(NAMES)}")
    net = UNet(**arch)
    try:
        net.load_state_dict(payload["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as error:
        detail = " ".join(str(error).split())[:160]
        raise ModelFileError(path, f"weights do not fit the architecture ({detail})") from error
    net.to(device).eval()
    metadata = {key: value for key, value in payload.items() if key not in _RESERVED}
    return Model(net=net, arch=arch, normalization=normalization, classes=classes,
                 metadata=metadata, path=str(path))


def _stored_arch(arch):
    """Complete architecture as stored; without ``stem_width`` when 0, so that earlier ccdseg versions read it."""
    arch = resolve_arch(arch)
    if not arch["stem_width"]:
        del arch["stem_width"]
    return arch


def _check_int(key, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"arch: {key} must be an integer >= {minimum}, got {value!r}")


def _loadable(value, key):
    """``value`` as types that ``torch.load(weights_only=True)`` accepts."""
    if isinstance(value, (np.generic, np.ndarray)):  # first: np.float64 is also a float
        return value.tolist()
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, dict):
        return {str(k): _loadable(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_loadable(v, key) for v in value]
    raise ConfigError(f"save_model: metadata {key!r} has type {type(value).__name__}; "
                      "use str, numbers, bool, None, lists or dicts")
