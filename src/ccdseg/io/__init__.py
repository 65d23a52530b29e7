"""FITS input and output at the package's edge: reading image HDUs, atomic writing, DS9 regions.

Names are imported on first use, so that importing a light submodule (``ccdseg.io.atomic``)
does not load astropy.
"""

import importlib

#: Public name -> submodule that defines it.
_LAZY = {"FITS_SUFFIXES": "fits", "ImageData": "fits", "fits_stem": "fits", "image_header": "fits",
         "read_images": "fits", "atomic_path": "atomic", "check_absent": "atomic", "output_paths": "atomic",
         "write_text_atomic": "atomic"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"ccdseg.io.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ccdseg.io' has no attribute {name!r}")


__all__ = list(_LAZY)
