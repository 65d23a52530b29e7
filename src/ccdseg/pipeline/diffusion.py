"""Calibrate the diffusion law from the through-going muons of FITS frames (``ccdseg calibrate-diffusion``)."""

import numpy as np
from scipy import ndimage

from ccdseg.calib.background import row_pedestal
from ccdseg.calib.gain import resolve_gain
from ccdseg.classes import BACKGROUND, CLUSTER
from ccdseg.io import read_images
from ccdseg.measure.diffusion import PIXEL_UM, THICKNESS_UM, fit_diffusion, width_profile
from ccdseg.measure.kinds import classify_kinds
from ccdseg.measure.objects import resolve_objects
from ccdseg.measure.sections import grown, structure, touches_edge

#: Pixels beside a track's labelled pixels whose charge counts in its width: the diffusion tails reach ~3 sigma
#: (< 5 px), and a segmentation calls the faintest of them background.
WING_PX = 4


def calibrate_diffusion(paths, *, gain=None, model=None, min_length_px=15.0, thickness_um=THICKNESS_UM,
                        pixel_um=PIXEL_UM):
    """Fit A and b of σ(z) = sqrt(-A ln(1 - b z)) to the width profiles of the muons in FITS files.

    Every image is segmented by the network, its clusters classified (:mod:`ccdseg.measure.kinds`);
    muons longer than ``min_length_px`` that do not touch the border are through-going tracks whose
    width profile samples σ(z) from the gates to the back (:func:`ccdseg.measure.diffusion.width_profile`).

    Returns
    -------
    dict
        ``a_um2``, ``b_per_um`` and their errors ``a_err_um2``, ``b_err_per_um``, and ``n_tracks``.
    """
    from ccdseg.infer.predict import get_model, segment  # torch only here

    model = get_model(model, "cpu")
    fractions, variances, n_tracks = [], [], 0
    for path in paths:
        for image in read_images(path):
            used_gain, _ = resolve_gain(image.data, (image.header,), gain, required=True)
            labels = resolve_objects(*segment(image.data, model=model))
            charge = (image.data - row_pedestal(image.data)[:, None]) / used_gain
            components, n = ndimage.label(labels == CLUSTER, structure=structure(2))
            kinds, _ = classify_kinds(charge, components, n)
            for index, box in enumerate(ndimage.find_objects(components)):
                if kinds[index] != "muon" or touches_edge(box, labels.shape):
                    continue
                # the track and its wings within WING_PX that the labels left background
                window = grown(box, WING_PX)
                own = components[window] == index + 1
                near = own | (ndimage.binary_dilation(own, iterations=WING_PX) & (labels[window] == BACKGROUND))
                rows, cols = np.nonzero(near)
                length, fraction, variance = width_profile(charge[window][rows, cols], rows, cols,
                                                           core=own[rows, cols])
                if length >= min_length_px:
                    fractions.append(fraction)
                    variances.append(variance)
                    n_tracks += 1
    a, b, a_err, b_err = fit_diffusion(np.concatenate(fractions or [[]]), np.concatenate(variances or [[]]),
                                       thickness_um=thickness_um, pixel_um=pixel_um)
    return {"a_um2": a, "b_per_um": b, "a_err_um2": a_err, "b_err_per_um": b_err, "n_tracks": n_tracks}
