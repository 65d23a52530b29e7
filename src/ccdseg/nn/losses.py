"""Training losses for the per-pixel classifier, all honouring the ignore label.

Cluster and hot pixels are rare (often < 1 % of an image), so an unweighted loss is
dominated by background; inverse-frequency class weights or a Dice term rebalance it.
"""

import numpy as np
import torch
import torch.nn.functional as F

from ccdseg.classes import IGNORE, N_CLASSES
from ccdseg.errors import ConfigError

LOSSES = ("ce", "dice", "focal", "ce+dice")


def class_counts(labels, n_classes=N_CLASSES, ignore_index=IGNORE):
    """Number of pixels of each class, for accumulating over many tiles.

    Parameters
    ----------
    labels : array_like of int
        Label map(s) of any shape; ``ignore_index`` pixels are skipped.
    n_classes : int
    ignore_index : int

    Returns
    -------
    ndarray (n_classes,), int64

    Raises
    ------
    ValueError
        If a label is neither a class id nor ``ignore_index``.
    """
    labels = np.asarray(labels).ravel()
    labels = labels[labels != ignore_index]
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"labels must be 0-{n_classes - 1} or {ignore_index}, "
                         f"found {labels.min()}..{labels.max()}")
    return np.bincount(labels.astype(np.int64), minlength=n_classes)


def class_weights_from_counts(counts):
    """Inverse-frequency ("balanced") class weights from pixel counts.

    ``w_c = N / (C_present * n_c)`` with N the labelled pixels and C_present the number of
    classes with n_c > 0, as scikit-learn's ``class_weight="balanced"`` and the 2020 thesis.
    The pixel-averaged weight is then 1, so a weighted loss keeps the scale of the unweighted
    one. Classes without pixels get weight 0 (they cannot contribute to the loss anyway).

    Parameters
    ----------
    counts : array_like (n_classes,)
        Pixels per class (see :func:`class_counts`).

    Returns
    -------
    ndarray (n_classes,), float64

    Raises
    ------
    ValueError
        If a count is negative or all counts are 0.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise ValueError(f"counts must be a 1-D array of non-negative numbers, got {counts!r}")
    present = counts > 0
    if not present.any():
        raise ValueError("no labelled pixels: cannot compute class weights")
    weights = np.zeros_like(counts)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights


def class_weights(labels, n_classes=N_CLASSES, ignore_index=IGNORE):
    """Inverse-frequency class weights of a label array (see :func:`class_weights_from_counts`).

    Parameters
    ----------
    labels : array_like of int
        Label map(s); ``ignore_index`` pixels are skipped.
    n_classes, ignore_index : int

    Returns
    -------
    ndarray (n_classes,), float64
    """
    return class_weights_from_counts(class_counts(labels, n_classes, ignore_index))


def weighted_cross_entropy(logits, labels, weights=None, ignore_index=IGNORE):
    """Class-weighted cross-entropy, averaged over the labelled pixels.

    Parameters
    ----------
    logits : Tensor (N, C, H, W)
        Network output (any float dtype; computed in float32).
    labels : Tensor (N, H, W), integer
        Class ids, or ``ignore_index`` for pixels that do not count.
    weights : Tensor or array_like (C,), optional
        Class weights; the mean is weighted, ``sum_i w_yi l_i / sum_i w_yi``, as in torch.
    ignore_index : int

    Returns
    -------
    Tensor (scalar)
        Loss in nats per pixel; 0 when no pixel is labelled.
    """
    logits, labels, weights = _prepare(logits, labels, weights)
    if not (labels != ignore_index).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, weight=weights, ignore_index=ignore_index)


def focal_loss(logits, labels, gamma=2.0, weights=None, ignore_index=IGNORE):
    """Focal loss (Lin et al. 2017): cross-entropy scaled by ``(1 - p_true)**gamma``.

    Down-weights pixels that are already classified confidently, such as the bulk of the
    background. With ``gamma = 0`` it equals :func:`weighted_cross_entropy`.

    Parameters
    ----------
    logits : Tensor (N, C, H, W)
    labels : Tensor (N, H, W), integer
    gamma : float
        Focusing exponent, >= 0.
    weights : Tensor or array_like (C,), optional
        Class weights, normalised as in :func:`weighted_cross_entropy`.
    ignore_index : int

    Returns
    -------
    Tensor (scalar)
        Loss in nats per pixel; 0 when no pixel is labelled.
    """
    logits, labels, weights = _prepare(logits, labels, weights)
    valid = labels != ignore_index
    if not valid.any():
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits, dim=1)
    target = torch.where(valid, labels, 0).unsqueeze(1)
    log_p_true = log_p.gather(1, target).squeeze(1)[valid]
    pixel_weights = (weights[target.squeeze(1)][valid] if weights is not None
                     else torch.ones_like(log_p_true))
    focus = (1.0 - log_p_true.exp()).clamp(min=0.0) ** gamma
    return -(pixel_weights * focus * log_p_true).sum() / pixel_weights.sum()


def dice_loss(logits, labels, ignore_index=IGNORE, smooth=1.0):
    """Soft multi-class Dice loss: 1 minus the mean over classes of the soft Dice coefficient.

    ``dice_c = (2 sum p_c y_c + smooth) / (sum p_c + sum y_c + smooth)`` over all labelled
    pixels of the batch, with p the softmax probabilities and y the one-hot labels. Every
    class counts equally whatever its size, so no class weights are needed; a class absent
    from both labels and prediction scores 1.

    Parameters
    ----------
    logits : Tensor (N, C, H, W)
    labels : Tensor (N, H, W), integer
    ignore_index : int
    smooth : float
        Added to numerator and denominator, in pixels; keeps empty classes finite.

    Returns
    -------
    Tensor (scalar)
        Between 0 (perfect) and 1.
    """
    logits, labels, _ = _prepare(logits, labels, None)
    valid = (labels != ignore_index).unsqueeze(1).to(logits.dtype)
    probs = F.softmax(logits, dim=1) * valid
    onehot = F.one_hot(torch.where(labels != ignore_index, labels, 0), logits.shape[1])
    onehot = onehot.permute(0, 3, 1, 2).to(logits.dtype) * valid
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return 1.0 - ((2.0 * intersection + smooth) / (total + smooth)).mean()


def distillation_loss(logits, teacher_logits):
    """Mean per-pixel KL divergence of the probabilities of ``logits`` from those of ``teacher_logits``.

    Parameters
    ----------
    logits, teacher_logits : Tensor (N, C, H, W)
        The network being trained and the fixed model it should stay close to.

    Returns
    -------
    Tensor (scalar)
        0 when both give the same probabilities; in nats per pixel.
    """
    log_p, log_q = F.log_softmax(logits.float(), dim=1), F.log_softmax(teacher_logits.float(), dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(1).mean()


def make_loss(name="ce", weights=None, ignore_index=IGNORE, gamma=2.0):
    """The training loss by name, as a function ``loss(logits, labels) -> scalar Tensor``.

    Parameters
    ----------
    name : {"ce", "dice", "focal", "ce+dice"}
        Weighted cross-entropy, soft Dice, focal, or the sum of cross-entropy and Dice.
    weights : array_like (C,), optional
        Class weights for the cross-entropy and focal terms (e.g. from :func:`class_weights`);
        Dice is already balanced and ignores them.
    ignore_index : int
    gamma : float
        Focusing exponent of the focal loss.

    Returns
    -------
    callable

    Raises
    ------
    ConfigError
        On an unknown name, negative or non-finite weights, or a negative gamma.
    """
    if name not in LOSSES:
        raise ConfigError(f"loss: unknown name {name!r} (expected {', '.join(LOSSES)})")
    if weights is not None:
        weights = torch.as_tensor(np.asarray(weights, dtype=np.float32))
        if weights.ndim != 1 or not torch.isfinite(weights).all() or (weights < 0).any() or weights.sum() <= 0:
            raise ConfigError(f"loss: weights must be non-negative numbers, not all 0, got {weights.tolist()}")
    if not gamma >= 0:
        raise ConfigError(f"loss: gamma must be >= 0, got {gamma!r}")

    def loss(logits, labels):
        if name == "ce":
            return weighted_cross_entropy(logits, labels, weights, ignore_index)
        if name == "focal":
            return focal_loss(logits, labels, gamma, weights, ignore_index)
        dice = dice_loss(logits, labels, ignore_index)
        if name == "dice":
            return dice
        return weighted_cross_entropy(logits, labels, weights, ignore_index) + dice

    loss.__name__ = name
    return loss


def _prepare(logits, labels, weights):
    """float32 logits (bf16 under autocast loses too much in the log-softmax), int64 labels."""
    logits = logits.float()
    labels = labels.to(device=logits.device, dtype=torch.long)
    if weights is not None:
        weights = torch.as_tensor(weights, dtype=torch.float32, device=logits.device)
    return logits, labels, weights
