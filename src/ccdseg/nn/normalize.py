"""Turn a raw CCD image into network input that does not depend on pedestal or gain.

The input is the pedestal-subtracted image in units of its own noise, compressed with
``asinh``: linear through the noise, logarithmic above it, so that a single electron in a
skipper image and a saturated hot pixel both stay within a range the network can use.
The parameters are stored in every model file, so that prediction repeats the training
normalisation exactly.
"""

from typing import NamedTuple

import numpy as np

from ccdseg.calib.background import robust_sigma, row_pedestal, sample_rows
from ccdseg.calib.baseline import subtract_zero
from ccdseg.checks import check_image
from ccdseg.errors import ConfigError

#: ``row_window``: rows of the running median that gives the per-row pedestal.
#: ``asinh_scale``: residuals up to about this many sigma stay linear, larger ones are
#: compressed logarithmically (3 keeps the noise distribution undistorted).
DEFAULT_PARAMS = {"row_window": 15, "asinh_scale": 3.0}
#: Pixels of an image the noise is measured on (whole rows, evenly spaced).


class NormalizationStats(NamedTuple):
    """Whole-image statistics that :func:`normalize` needs.

    Attributes
    ----------
    pedestal : ndarray (H,)
        Pedestal of each row, in the unit of the image (ADU).
    sigma : float
        Robust noise of the pedestal-subtracted image, in the same unit; always > 0.
    """

    pedestal: np.ndarray
    sigma: float


def validate_params(params=None):
    """Check normalisation parameters and fill the missing ones from :data:`DEFAULT_PARAMS`.

    Parameters
    ----------
    params : dict or None
        Any subset of the keys of :data:`DEFAULT_PARAMS`; None means all defaults.

    Returns
    -------
    dict
        A complete, validated copy.

    Raises
    ------
    ConfigError
        On an unknown key or a value of the wrong type or out of range; the message names the key.
    """
    params = dict(params or {})
    unknown = sorted(set(params) - set(DEFAULT_PARAMS))
    if unknown:
        raise ConfigError(f"normalization: unknown parameter {unknown[0]!r} "
                          f"(expected {', '.join(DEFAULT_PARAMS)})")
    merged = {**DEFAULT_PARAMS, **params}
    window = merged["row_window"]
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ConfigError(f"normalization: row_window must be a positive integer, got {window!r}")
    scale = merged["asinh_scale"]
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) \
            or not np.isfinite(scale) or scale <= 0:
        raise ConfigError(f"normalization: asinh_scale must be a positive number, got {scale!r}")
    return {"row_window": int(window), "asinh_scale": float(scale)}


def normalization_stats(image, params=None):
    """Per-row pedestal and robust noise of a raw image.

    Compute these once on a whole image and pass them to :func:`normalize` for each tile,
    so that every tile is scaled alike.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw image in ADU (any pedestal and gain); NaN/Inf pixels are ignored.
    params : dict or None
        Normalisation parameters (see :data:`DEFAULT_PARAMS`).

    Returns
    -------
    NormalizationStats
        ``pedestal`` (H,) and ``sigma``, both in ADU.
    """
    params = validate_params(params)
    image = check_image(image)  # row_pedestal converts to float64 a band of rows at a time
    pedestal = row_pedestal(image, params["row_window"])
    # every k-th row: 2 Mpix measure the noise to 0.1 %, and a full frame's medians cost a second
    rows = sample_rows(image.shape)
    sample = image[rows].astype(np.float64)
    sigma = robust_sigma(sample - pedestal[rows, None])
    # A noiseless (constant) image has sigma 0; anything below the float32 resolution of the
    # image values is not a measurable noise, and the floor keeps the division finite.
    finite = sample[np.isfinite(sample)]
    magnitude = float(np.max(np.abs(finite))) if finite.size else 0.0
    floor = np.finfo(np.float32).eps * magnitude if magnitude > 0 else 1.0
    return NormalizationStats(pedestal, max(sigma, floor))


def normalize(image, params=None, stats=None):
    """Pedestal-subtracted, noise-scaled, asinh-compressed image for the network.

    ``out = asinh((image - pedestal[row]) / (asinh_scale * sigma))``; the result is the same
    for any pedestal and any gain (when the noise in ADU scales with the gain).

    Parameters
    ----------
    image : ndarray (H, W)
        Raw image in ADU.
    params : dict or None
        Normalisation parameters (see :data:`DEFAULT_PARAMS`).
    stats : NormalizationStats or (pedestal, sigma), optional
        Precomputed statistics; for a tile of rows ``y0:y1`` of a larger image pass
        ``(stats.pedestal[y0:y1], stats.sigma)``. Computed from ``image`` when omitted.

    Returns
    -------
    ndarray (H, W), float32
        Dimensionless network input; NaN/Inf pixels are set to 0.

    Raises
    ------
    ValueError
        If ``image`` is not 2-D or ``stats.pedestal`` does not have one value per row.
    """
    params = validate_params(params)
    image = check_image(image, dtype=np.float64)
    pedestal, sigma = normalization_stats(image, params) if stats is None else stats
    pedestal = np.asarray(pedestal, dtype=np.float64)
    if pedestal.shape != (image.shape[0],):
        raise ValueError(f"stats.pedestal has shape {pedestal.shape}, expected one value per "
                         f"image row ({image.shape[0]},)")
    if not sigma > 0:
        raise ValueError(f"stats.sigma must be positive, got {sigma!r}")
    out = image - pedestal[:, None]
    out /= params["asinh_scale"] * sigma
    np.arcsinh(out, out=out)
    out[~np.isfinite(out)] = 0.0
    return out.astype(np.float32)


def equalize_noise(zeroed, segments, noise, *, undo=False):
    """Scale every amplifier segment of a zeroed image to the noise of the first, in place.

    With the returned statistics, :func:`normalize` then gives every segment its own normalisation,
    ``asinh(zeroed / (asinh_scale * noise[segment]))``, in one pass over the whole image (no seam, no
    per-pixel statistics). Call again with ``undo=True`` to restore the ADU values.

    Parameters
    ----------
    zeroed : ndarray (H, W) float32
        Image minus the zero of each segment (:func:`ccdseg.calib.baseline.subtract_zero`), ADU.
    segments : sequence of ccdseg.calib.amplifiers.Segment
    noise : sequence of float
        Noise of each segment (ADU).
    undo : bool
        Scale back to ADU.

    Returns
    -------
    NormalizationStats
        Zero pedestal and the first segment's noise (ADU).
    """
    magnitude = np.nanmax(np.abs(zeroed)) if np.isfinite(zeroed).any() else 0.0
    floor = np.finfo(np.float32).eps * magnitude if magnitude > 0 else 1.0
    noise = [max(float(sigma), floor) for sigma in noise]
    for segment, sigma in zip(segments, noise, strict=True):
        factor = sigma / noise[0] if undo else noise[0] / sigma
        if factor != 1.0:
            zeroed[segment.rows, segment.cols] *= np.float32(factor)
    return NormalizationStats(np.zeros(zeroed.shape[0]), noise[0])


def network_input(image, segments, params=None):
    """The image the network labels and its statistics, the same in training and prediction.

    A frame of one amplifier segment without a significant column baseline is labelled as it is, with
    its per-row pedestal and one noise (:func:`normalization_stats`); otherwise every segment minus its
    zero (:func:`ccdseg.calib.baseline.subtract_zero`), scaled to the first segment's noise
    (:func:`equalize_noise`), so that each amplifier is normalised on its own without a seam.

    Parameters
    ----------
    image : ndarray (H, W)
        Raw image in ADU.
    segments : sequence of ccdseg.calib.amplifiers.Segment
        Its amplifier segments (:func:`ccdseg.calib.amplifiers.find_segments`).
    params : dict or None
        Normalisation parameters (see :data:`DEFAULT_PARAMS`).

    Returns
    -------
    image : ndarray (H, W)
        ``image`` itself, or a new float32 image: zeroed, the segments at one noise, NaN outside them.
    stats : NormalizationStats
    noise : list of float or None
        Noise of each segment (ADU), to undo the scaling with ``equalize_noise(..., undo=True)``;
        None when ``image`` is returned as it is.
    """
    params = validate_params(params)
    zeroed, noise, baselines = subtract_zero(image, segments, row_window=params["row_window"])
    if len(segments) == 1 and baselines[0] is None:
        return image, normalization_stats(image, params), None
    return zeroed, equalize_noise(zeroed, segments, noise), noise
