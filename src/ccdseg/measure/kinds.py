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
    q = np.clip(np.asarray(charge, dtype=np.float64), 0.0, None)
    if q.sum() <= 0:
        q = np.ones_like(q)
    total, peak = q.sum(), q.max()
    y, x = np.asarray(rows, float), np.asarray(cols, float)
    yc, xc = np.average(y, weights=q), np.average(x, weights=q)
    dy, dx = y - yc, x - xc
    cov = np.cov(np.vstack([dx, dy]), aweights=q, bias=True) if q.size > 1 else np.zeros((2, 2))
    variances, vectors = np.linalg.eigh(cov)
    along = dx * vectors[0, 1] + dy * vectors[1, 1]
    across = dx * vectors[0, 0] + dy * vectors[1, 0]
    length = np.sqrt(12.0 * max(variances[1], 0.0)) + 1.0
    thirds = np.digitize(along, np.array([-1.0, 1.0]) * (length - 1.0) / 6.0)
    widths = [np.sqrt(np.average(across[thirds == k] ** 2, weights=q[thirds == k]) + 1 / 12)
              if q[thirds == k].sum() > 0 else np.sqrt(1 / 12) for k in (0, 2)]
    slices = np.bincount(np.round(along - along.min()).astype(int), weights=q)
    return np.array([
        np.log10(total ** 2 / np.sum(q ** 2)), np.log10(max(total, 1.0)), np.log10(max(peak, 1.0)), peak / total,
        np.log10(np.sqrt(max(variances[1], 0.0)) + 0.05), np.log10(np.sqrt(max(variances[0], 0.0)) + 0.05),
        np.log10(length), q[np.abs(across) <= 1.0].sum() / total, np.log10(max(widths) / min(widths)),
        np.log10(max(total, 1.0) / length), slices.std() / max(slices.mean(), 1e-9),
        np.sort(q)[-4:].sum() / total,
    ])


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
    """
    from scipy import ndimage

    n = int(components.max()) if n is None else n
    features = np.zeros((n, len(FEATURES)))
    for index, box in enumerate(ndimage.find_objects(components, max_label=n)):
        if box is None:
            continue
        rows, cols = np.nonzero(components[box] == index + 1)
        values = np.nan_to_num(charge_image[box][rows, cols])
        features[index] = shape_features(values, rows + box[0].start, cols + box[1].start)
    return features


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
