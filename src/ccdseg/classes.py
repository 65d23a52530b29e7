"""The four pixel classes of ccdseg: ids, names and display colours, defined once."""

import numbers

BACKGROUND = 0
GLOWING = 1
HOT_PIXEL = 2
CLUSTER = 3

#: Label value for pixels whose class is unknown (the loss and metrics skip them).
IGNORE = 255

NAMES = ("background", "glowing", "hot pixel", "cluster")
#: Display colours (RGB hex), chosen to stay distinct for colour-blind readers.
COLORS = ("#000000", "#e69f00", "#56b4e9", "#d7263d")
N_CLASSES = len(NAMES)


def class_id(name_or_id):
    """Return the class id for a class name ("cluster", "hot_pixel", ...) or id (0-3).

    Raises
    ------
    ValueError
        If the name or id is not one of the four classes.
    """
    if isinstance(name_or_id, numbers.Integral) or str(name_or_id).isdigit():
        value = int(name_or_id)
        if 0 <= value < N_CLASSES:
            return value
    else:
        key = str(name_or_id).strip().lower().replace("_", " ").replace("-", " ")
        aliases = {n: i for i, n in enumerate(NAMES)}
        aliases.update({"hot": HOT_PIXEL, "hot pixels": HOT_PIXEL, "glow": GLOWING,
                        "clusters": CLUSTER, "bg": BACKGROUND})
        if key in aliases:
            return aliases[key]
    raise ValueError(f"unknown class {name_or_id!r}: expected one of {', '.join(NAMES)} or 0-{N_CLASSES - 1}")


def rgb_table():
    """Colours as a (N_CLASSES, 3) uint8 array, for turning a label map into an RGB image."""
    import numpy as np

    return np.array([[int(c[i:i + 2], 16) for i in (1, 3, 5)] for c in COLORS], dtype=np.uint8)
