"""The one input check of array arguments, in the way of scikit-image's ``check_nD``."""

import numpy as np

from ccdseg.errors import ConfigError


def check_image(image, name="image", *, dtype=None, shape=None):
    """Return ``image`` as an array after checking that it is a non-empty 2-D image.

    Parameters
    ----------
    image : array_like
        The argument to check.
    name : str
        Its name in the error message.
    dtype : numpy dtype, optional
        Convert to this type (default: keep the input's).
    shape : tuple of int, optional
        The shape it must have (an image's companion: labels, a mask).

    Raises
    ------
    ConfigError
        Not 2-D, empty, or of another shape than ``shape``.
    """
    array = np.asarray(image, dtype=dtype)
    if array.ndim != 2 or 0 in array.shape:
        raise ConfigError(f"{name} must be a non-empty 2-D array, got shape {array.shape}")
    if shape is not None and array.shape != tuple(shape):
        raise ConfigError(f"{name} must have the image's shape {tuple(shape)}, got {array.shape}")
    return array
