"""DS9 region files of catalogued objects."""

import math

#: DS9 colour of a cluster by its flag, first match wins: cut by the image border, touching a
#: hot pixel or a glowing pixel (its charge may be mixed with theirs), or none of these.
FLAG_COLORS = (("edge", "yellow"), ("near_hot", "cyan"), ("near_glow", "magenta"), ("normal", "green"))


def region_file_text(table):
    """DS9 region file text with one box (the bounding box) per catalogue row.

    Each box is coloured by the row's flag (:data:`FLAG_COLORS`) and labelled with the
    cluster's energy in keV when it is known (a gain was available), else with its ``id``.
    DS9 image coordinates are 1-based with pixel centres at integers, so the 0-based pixel
    ``(x, y)`` is ``(x + 1, y + 1)`` in the file.

    Parameters
    ----------
    table : astropy.table.Table
        Catalogue rows of ONE image, with ``id``, ``xmin``, ``xmax``, ``ymin``, ``ymax``, and
        optionally ``energy_ev`` and the flags ``edge``, ``near_hot``, ``near_glow``
        (from :func:`ccdseg.measure.catalog.find_clusters`).

    Returns
    -------
    str
        The file contents, ending with a newline.
    """
    legend = ", ".join(f"{color} {flag.replace('_', ' ')}" for flag, color in FLAG_COLORS)
    lines = ["# Region file format: DS9 version 4.1",
             f"# ccdseg clusters: {legend}; text: energy in keV, or #id without a gain",
             'global color=green font="helvetica 10 normal" select=1 edit=0 move=0 delete=1',
             "image"]
    for row in table:
        xmin, xmax, ymin, ymax = (int(row[k]) for k in ("xmin", "xmax", "ymin", "ymax"))
        color = next(color for flag, color in FLAG_COLORS
                     if flag == "normal" or (flag in row.colnames and row[flag]))
        energy = float(row["energy_ev"]) if "energy_ev" in row.colnames else math.nan
        text = f"{energy / 1000:.3g} keV" if math.isfinite(energy) else f"#{int(row['id'])}"
        lines.append(f"box({(xmin + xmax) / 2 + 1:g},{(ymin + ymax) / 2 + 1:g},{xmax - xmin + 1},"
                     f"{ymax - ymin + 1},0) # color={color} text={{{text}}}")
    return "\n".join(lines) + "\n"
