"""Particle kind of each cluster from its shape: point, electron, muon or alpha.

Each cluster is described by a few measured shape features (size, charge, extent along and across its
principal axis, straightness, how the width changes along it) and a small network (one hidden layer,
numpy only) turns them into the probability of each kind. The network is trained on the simulator's
truth by ``benchmarks/train_kinds.py``; its parameters ship as ``ccdseg/data/kinds.json``.

The kinds: ``point`` (diffusion-limited: X-rays, low-energy electrons, nuclear recoils), ``electron``
(a multiple-scattering track, the simulator's ``worm``), ``muon`` (a straight track through the depth)
and ``alpha`` (large, round and saturating).
"""

import json
from dataclasses import dataclass
from importlib import resources

import numpy as np

from ccdseg.errors import ConfigError

#: Particle kinds, in the order of the probability columns.
KINDS = ("point", "electron", "muon", "alpha")
#: The simulator's event kinds (:data:`ccdseg.sim.events.KINDS`) as particle kinds.
SIM_KINDS = {"point": "point", "worm": "electron", "muon": "muon", "alpha": "alpha"}
#: Names of the shape features of :func:`shape_features`, in order.
FEATURES = ("log_effective_pixels", "log_charge", "log_peak", "peak_share", "log_sigma_major", "log_sigma_minor",
            "log_length", "line_share", "log_width_ratio", "log_charge_per_px", "charge_variation", "top4_share")
#: Location of the shipped kind network inside the package.
KIND_MODEL_FILE = "data/kinds.json"


def shape_features(charge, rows, cols):
    """Shape features of one cluster, in the order of :data:`FEATURES`.

    Parameters
    ----------
    charge : ndarray (n,)
        Charge of each pixel of the cluster (e-); negative noise counts as zero.
    rows, cols : ndarray (n,)
        Pixel coordinates (px).

    Returns
    -------
    ndarray (len(FEATURES),)
        Logarithms are base 10 of e- or px. Every feature weights the pixels by their charge, so that
        faint pixels at the rim (dark charge, noise) that a segmentation may or may not include change
        little: ``effective_pixels`` is (sum q)^2 / sum q^2, ``sigma_major``/``sigma_minor`` the standard
        deviations along and across the principal axis, ``length`` sqrt(12) sigma_major + 1 (the length of
        a uniform track, px), ``line_share`` the share of charge within 1 px of the axis, ``width_ratio``
        the widest over the narrowest transverse spread of the first and last thirds (a muon widens with
        depth), ``charge_variation`` the coefficient of variation of the charge per 1-px slice along the
        axis and ``top4_share`` the share of the charge in the 4 brightest pixels.
    """
    charge = np.asarray(charge)
    return _features(charge, np.zeros(charge.shape, np.intp), np.asarray(rows), np.asarray(cols), 1)[0]


def cluster_features(charge_image, components, n=None):
    """:func:`shape_features` of every labelled cluster.

    Parameters
    ----------
    charge_image : ndarray (H, W)
        Pedestal-subtracted image in electrons (NaN counts as zero).
    components : ndarray (H, W) of int
        Cluster number of each pixel, 1..n, 0 outside clusters (e.g. from :func:`scipy.ndimage.label`).
    n : int, optional
        Number of clusters; default ``components.max()``.

    Returns
    -------
    ndarray (n, len(FEATURES))
        A number without pixels has zeros.
    """
    n = int(components.max()) if n is None else n
    rows, cols = np.nonzero((components > 0) & (components <= n))
    cluster = components[rows, cols].astype(np.intp) - 1
    features = _features(np.nan_to_num(charge_image[rows, cols]), cluster, rows, cols, n)
    features[np.bincount(cluster, minlength=n) == 0] = 0.0
    return features


def _features(charge, cluster, rows, cols, n):
    """:data:`FEATURES` of the pixels of clusters ``0..n-1`` (``cluster`` each pixel's), all at once.

    One pass over all pixels with per-cluster sums: a loop over the clusters of a 4096^2 frame took seconds.
    """
    def total_of(values):
        return np.bincount(cluster, weights=values, minlength=n)

    q = np.clip(charge.astype(np.float64), 0.0, None)
    npix = np.bincount(cluster, minlength=n)
    uncharged = total_of(q) <= 0
    q[uncharged[cluster]] = 1.0  # a cluster without positive charge weights its pixels equally
    total = np.where(npix > 0, total_of(q), 1.0)  # a number without pixels: any finite value, zeroed by the caller
    peak = np.zeros(n)
    np.maximum.at(peak, cluster, q)
    y, x = rows.astype(np.float64), cols.astype(np.float64)
    dy, dx = y - (total_of(q * y) / total)[cluster], x - (total_of(q * x) / total)[cluster]
    cov = np.zeros((n, 2, 2))
    cov[:, 0, 0], cov[:, 1, 1] = total_of(q * dx * dx) / total, total_of(q * dy * dy) / total
    cov[:, 0, 1] = cov[:, 1, 0] = total_of(q * dx * dy) / total
    cov[npix < 2] = 0.0
    variances, vectors = np.linalg.eigh(cov)
    vectors = vectors[cluster]
    along = dx * vectors[:, 0, 1] + dy * vectors[:, 1, 1]
    across = dx * vectors[:, 0, 0] + dy * vectors[:, 1, 0]
    major, minor = np.maximum(variances[:, 1], 0.0), np.maximum(variances[:, 0], 0.0)
    length = np.sqrt(12.0 * major) + 1.0
    # thirds along the axis: 0 first, 1 middle, 2 last; a muon's width grows from one end to the other
    edge = ((length - 1.0) / 6.0)[cluster]
    thirds = (along >= -edge).astype(np.intp) + (along >= edge)
    widths = []
    for third in (0, 2):
        inside = thirds == third
        weight = total_of(q * inside)
        spread = total_of(q * inside * across ** 2) / np.where(weight > 0, weight, 1.0)
        widths.append(np.sqrt(np.where(weight > 0, spread, 0.0) + 1 / 12))
    widths = np.stack(widths)
    # charge per 1-px slice along the axis, slices numbered from each cluster's first
    lowest = np.full(n, np.inf)
    np.minimum.at(lowest, cluster, along)
    slice_number = np.round(along - lowest[cluster]).astype(np.intp)
    n_slices = np.zeros(n, np.intp)
    np.maximum.at(n_slices, cluster, slice_number + 1)
    offset = np.concatenate([[0], np.cumsum(n_slices)])
    slices = np.bincount(offset[cluster] + slice_number, weights=q, minlength=offset[-1])
    slice_mean = total / np.maximum(n_slices, 1)
    slice_owner = np.repeat(np.arange(n), n_slices)
    slice_std = np.sqrt(np.bincount(slice_owner, weights=(slices - slice_mean[slice_owner]) ** 2, minlength=n)
                        / np.maximum(n_slices, 1))
    # the 4 brightest pixels of each cluster: sorted by cluster, then charge
    order = np.lexsort((q, cluster))
    rank_from_top = np.concatenate([[0], np.cumsum(npix)])[cluster[order] + 1] - 1 - np.arange(order.size)
    top4 = np.bincount(cluster[order], weights=q[order] * (rank_from_top < 4), minlength=n)
    return np.column_stack([
        np.log10(total ** 2 / np.where(npix > 0, total_of(q ** 2), 1.0)), np.log10(np.maximum(total, 1.0)),
        np.log10(np.maximum(peak, 1.0)), peak / total,
        np.log10(np.sqrt(major) + 0.05), np.log10(np.sqrt(minor) + 0.05),
        np.log10(length), total_of(q * (np.abs(across) <= 1.0)) / total,
        np.log10(widths.max(axis=0) / widths.min(axis=0)),
        np.log10(np.maximum(total, 1.0) / length), slice_std / np.maximum(slice_mean, 1e-9),
        top4 / total,
    ])


@dataclass(frozen=True)
class KindModel:
    """A one-hidden-layer network from standardised :data:`FEATURES` to the probability of each of :data:`KINDS`."""

    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def logits(self, features):
        """Unnormalised log-probabilities of each kind, ndarray (n, len(KINDS))."""
        hidden = np.tanh(((np.asarray(features, float) - self.mean) / self.scale) @ self.w1 + self.b1)
        return hidden @ self.w2 + self.b2

    def predict_proba(self, features):
        """Probability of each kind, ndarray (n, len(KINDS)); rows sum to 1."""
        logits = self.logits(np.atleast_2d(features))
        logits -= logits.max(axis=1, keepdims=True)
        weights = np.exp(logits)
        return weights / weights.sum(axis=1, keepdims=True)

    def to_dict(self):
        """JSON-ready parameters, with the feature and kind names they belong to."""
        return {"features": list(FEATURES), "kinds": list(KINDS),
                **{name: getattr(self, name).tolist() for name in ("mean", "scale", "w1", "b1", "w2", "b2")}}

    @classmethod
    def from_dict(cls, document):
        """The model of :meth:`to_dict`'s document; ConfigError when its features or kinds differ."""
        if list(document.get("features", [])) != list(FEATURES) or list(document.get("kinds", [])) != list(KINDS):
            raise ConfigError("kind model: its features or kinds differ from this version of ccdseg")
        return cls(**{name: np.asarray(document[name], float) for name in ("mean", "scale", "w1", "b1", "w2", "b2")})


def load_kind_model(path=None):
    """The kind network of ``path`` (JSON of :meth:`KindModel.to_dict`), default the shipped one."""
    if path is None:
        text = resources.files("ccdseg").joinpath(KIND_MODEL_FILE).read_text()
    else:
        with open(path) as handle:
            text = handle.read()
    return KindModel.from_dict(json.loads(text))


def classify_kinds(charge_image, components, n=None, model=None):
    """Probability of each particle kind for every labelled cluster.

    Parameters
    ----------
    charge_image : ndarray (H, W)
        Pedestal-subtracted image in electrons.
    components : ndarray (H, W) of int
        Cluster number of each pixel, 1..n, 0 elsewhere.
    n : int, optional
        Number of clusters; default ``components.max()``.
    model : KindModel, optional
        Default the shipped network (:func:`load_kind_model`).

    Returns
    -------
    kind : ndarray (n,) of str
        Most probable kind of each cluster (one of :data:`KINDS`).
    probabilities : ndarray (n, len(KINDS))
    """
    model = load_kind_model() if model is None else model
    features = cluster_features(charge_image, components, n)
    if features.shape[0] == 0:
        return np.zeros(0, dtype=f"U{max(map(len, KINDS))}"), np.zeros((0, len(KINDS)))
    probabilities = model.predict_proba(features)
    return np.asarray(KINDS)[probabilities.argmax(axis=1)], probabilities
