"""Export a model to ONNX, and run an exported model with ONNX Runtime.

The ONNX graph maps normalised tiles ``image`` (N, 1, H, W) float32 to class probabilities
``probabilities`` (N, 4, H, W) float32 (the softmax is part of the graph); N, H and W are
dynamic, H and W must be multiples of ``2**depth``. The file's ``metadata_props`` carry what
a user without ccdseg needs to prepare the input (the normalisation parameters and its recipe,
see :data:`PREPROCESSING`) and to read the output (the class names), as JSON strings.

``onnx`` and ``onnxruntime`` are an optional extra (``pip install 'ccdseg[onnx]'``) and are
imported only when needed.
"""

import copy
import dataclasses
import importlib
import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ccdseg._version import __version__
from ccdseg.classes import NAMES
from ccdseg.errors import ConfigError, ModelFileError
from ccdseg.io import atomic_path
from ccdseg.nn.model import Model, input_multiple, load_model, resolve_arch
from ccdseg.nn.normalize import validate_params

FORMAT = "ccdseg-onnx"
INPUT_NAME = "image"
OUTPUT_NAME = "probabilities"
#: Opset 17 is read by every ONNX Runtime since 1.12.
OPSET = 17
#: How the network input is made from a raw image, for the ``preprocessing`` metadata entry.
PREPROCESSING = (
    "x = asinh((image - pedestal[row]) / (asinh_scale * sigma)), float32, NaN/Inf set to 0. "
    "image: raw ADU. pedestal[row]: median of each row (NaN/Inf ignored; a row without finite pixels "
    "interpolated from its neighbours), smoothed by a running median over min(row_window, H) rows made odd "
    "(size | 1), edges repeated. sigma: 1.4826 * median absolute deviation of the pedestal-subtracted image "
    "on every k-th row, k = ceil(H * W / 2**21) (all rows when k < 2), NaN/Inf ignored; where that MAD is 0 "
    "(most pixels at exactly one value), the standard deviation of the values whose distance to the median "
    "is at most the median of the non-zero distances; at least float32 eps * max|sampled image|. "
    "Compute pedestal and sigma on the whole image, then cut tiles; "
    "tile height and width must be multiples of 2**depth (pad by mirroring, edge pixel included: numpy.pad "
    "mode 'symmetric'). "
    "Output: softmax probabilities of the classes, in the order of 'classes'.")


@dataclasses.dataclass
class OnnxModel:
    """An ONNX model ready to run: the ONNX Runtime session and what is needed to apply it.

    Attributes mirror :class:`ccdseg.nn.model.Model`, with ``session`` in place of ``net``.
    """

    session: object
    arch: dict
    normalization: dict
    classes: list
    metadata: dict
    path: str

    def probabilities(self, tiles):
        """Class probabilities (N, C, H, W) float32 of normalised tiles (N, 1, H, W) float32."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: tiles})[0]


class _WithSoftmax(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)


def onnx_bytes(model=None):
    """Serialised ONNX model (with metadata) of a ccdseg model.

    Parameters
    ----------
    model : Model, str, path-like or None
        A loaded model or a model file (None: the shipped model).

    Returns
    -------
    bytes

    Raises
    ------
    ModelFileError
        The model file is missing or unusable.
    ConfigError
        The ``onnx`` package is not installed.
    """
    onnx = _require("onnx")
    if not isinstance(model, Model):
        model = load_model(model)
    # a copy: the caller's network keeps its device and memory layout
    net = _WithSoftmax(copy.deepcopy(model.net)).to("cpu", memory_format=torch.contiguous_format).eval()
    side = input_multiple(model.arch)
    stream = io.BytesIO()
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated but exports in 0.2 s where the dynamo exporter
        # takes ~7 s; the shape check of UNet.forward is traced away (with a warning), as it should
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, model.arch["in_channels"], side, side),), stream, dynamo=False,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], opset_version=OPSET,
                          dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes})
    proto = onnx.load_from_string(stream.getvalue())
    proto.doc_string = "ccdseg pixel classifier; see metadata_props 'preprocessing' for the input"
    for key, value in {
        "format": FORMAT,
        "ccdseg_version": __version__,
        "source_model": Path(model.path).name,
        "normalization": json.dumps(model.normalization),
        "preprocessing": PREPROCESSING,
        "classes": json.dumps(list(model.classes)),
        "arch": json.dumps(model.arch),
    }.items():
        proto.metadata_props.add(key=key, value=value)
    return proto.SerializeToString()


def export_onnx(model, path, overwrite=False):
    """Write a model as an ONNX file (atomically).

    Parameters
    ----------
    model : Model, str, path-like or None
        A loaded model or a model file (None: the shipped model).
    path : str or path-like
        The ONNX file to write.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ModelFileError
        The model file is missing or unusable.
    OutputError
        ``path`` exists (without ``overwrite``) or cannot be written.
    ConfigError
        The ``onnx`` package is not installed.
    """
    data = onnx_bytes(model)
    path = Path(path)
    with atomic_path(path, overwrite) as temp:
        temp.write_bytes(data)
    return path


def load_onnx_model(model=None, device="cpu"):
    """An :class:`OnnxModel` from an ONNX file written by :func:`export_onnx`, or from a ccdseg model.

    Parameters
    ----------
    model : Model, str, path-like or None
        An ``.onnx`` file; or a loaded model or model file (None: the shipped model), exported
        in memory.
    device : str
        "cpu", or "cuda" for ONNX Runtime's CUDA provider (an error when it cannot be used).

    Returns
    -------
    OnnxModel

    Raises
    ------
    ModelFileError
        The file is missing, not a ccdseg ONNX model, or unreadable.
    ConfigError
        ``onnxruntime`` (or, for export, ``onnx``) is not installed, or ``device`` is CUDA and
        ONNX Runtime cannot use it (never a silent fall-back to the CPU).
    """
    ort = _require("onnxruntime")
    if isinstance(model, Model) or not is_onnx_path(model):
        source = model if isinstance(model, Model) else load_model(model)
        data, path = onnx_bytes(source), source.path
    else:
        path = Path(model)
        if not path.is_file():
            raise ModelFileError(path, "no such file" if not path.exists() else "not a regular file")
        data = path.read_bytes()
    cuda = torch.device(device).type == "cuda"
    if cuda and "CUDAExecutionProvider" not in ort.get_available_providers():
        raise ConfigError(f"device {device!r} with the onnx engine: this ONNX Runtime has no CUDA provider "
                          "(pip install onnxruntime-gpu), and it would run on the CPU instead")
    providers = ["CUDAExecutionProvider"] if cuda else ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    # as many threads as PyTorch uses (one per Dask worker), not ONNX Runtime's one per core
    options.intra_op_num_threads = torch.get_num_threads()
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=providers)
    except Exception as error:  # onnxruntime raises its own exception types for damaged files
        if cuda:
            raise ConfigError(f"device {device!r} with the onnx engine: ONNX Runtime cannot start CUDA "
                              f"({' '.join(str(error).split())[:160]})") from error
        raise ModelFileError(path, "not a readable ONNX file (corrupt, truncated or another format)") from error
    if cuda and "CUDAExecutionProvider" not in session.get_providers():
        raise ConfigError(f"device {device!r} with the onnx engine: ONNX Runtime cannot use CUDA on this machine")
    props = session.get_modelmeta().custom_metadata_map
    if props.get("format") != FORMAT:
        raise ModelFileError(path, "not a ccdseg ONNX model (no 'format' metadata); export it with ccdseg export")
    try:
        arch = resolve_arch(json.loads(props["arch"]))
        normalization = validate_params(json.loads(props["normalization"]))
        classes = json.loads(props["classes"])
    except (KeyError, ValueError) as error:  # ConfigError and JSONDecodeError are ValueErrors
        raise ModelFileError(path, f"damaged ccdseg metadata ({error})") from None
    if classes != list(NAMES):
        raise ModelFileError(path, f"classes {classes} do not match this ccdseg's classes {list(NAMES)}")
    metadata = {key: value for key, value in props.items() if key not in ("arch", "normalization", "classes")}
    return OnnxModel(session=session, arch=arch, normalization=normalization, classes=classes,
                     metadata=metadata, path=str(path))


def is_onnx_path(model):
    """Whether ``model`` names an ONNX file (by its ``.onnx`` ending)."""
    return isinstance(model, (str, os.PathLike)) and os.fspath(model).lower().endswith(".onnx")


def _require(module):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"ONNX export and the onnx engine need the {module} package: "
                          "pip install 'ccdseg[onnx]'") from None
