"""DS9 region files of catalogued objects."""


def region_file_text(table, color="red"):
    """DS9 region file text with one box (the bounding box) per catalogue row, labelled with its id.

    DS9 image coordinates are 1-based with pixel centres at integers, so the 0-based pixel ``(x, y)``
    is ``(x + 1, y + 1)`` in the file.

    Parameters
    ----------
    table : astropy.table.Table
        Catalogue with ``id``, ``xmin``, ``xmax``, ``ymin``, ``ymax`` (from :func:`find_clusters`).
    color : str
        DS9 colour of the boxes.

    Returns
    -------
    str
        The file contents, ending with a newline.
    """
    lines = ["# Region file format: DS9 version 4.1",
             f'global color={color} font="helvetica 10 normal" select=1 edit=0 move=0 delete=1',
             "image"]
    for row in table:
        xmin, xmax, ymin, ymax = (int(row[k]) for k in ("xmin", "xmax", "ymin", "ymax"))
        lines.append(f"box({(xmin + xmax) / 2 + 1:g},{(ymin + ymax) / 2 + 1:g},{xmax - xmin + 1},"
                     f"{ymax - ymin + 1},0) # text={{{int(row['id'])}}}")
    return "\n".join(lines) + "\n"
