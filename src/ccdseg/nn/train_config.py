"""The training recipe: :class:`TrainConfig`, read from a TOML file, ``key=value`` overrides and keywords.

:func:`load_train_config` builds it and :func:`validate_train_config` checks it (types through
:func:`ccdseg.settings.coerce`, ranges from the rule table ``_RULES``), so that a bad value is
refused, naming the key, before any tile is drawn. :func:`output_paths` names the files a
training run writes beside its model file.
"""

import dataclasses
import os
from pathlib import Path

from ccdseg.classes import N_CLASSES
from ccdseg.errors import ConfigError
from ccdseg.io import output_paths as files
from ccdseg.nn import dataset, losses
from ccdseg.nn.model import input_multiple
from ccdseg.nn.normalize import validate_params
from ccdseg.settings import NON_NEGATIVE, POSITIVE, check_rules, coerce, interval, one_of, parse_overrides, read_toml

#: Sources of training tiles: the simulator, ``train_dir`` (simulated files), ``labelled_dir`` (the user's own).
SOURCES = ("simulation", "files", "labelled")
#: How messages name the type a value must have.
_WORDS = {kind: f"of type {kind.__name__}" for kind in (bool, int, float, str, list, dict)}


@dataclasses.dataclass
class TrainConfig:
    """Everything that defines a training run (a TOML file sets any subset of it).

    Attributes
    ----------
    arch : str or dict
        Architecture preset (``"default"``, ``"thesis"``) or dict (see :func:`ccdseg.nn.model.resolve_arch`).
    tile_size : int
        Training tile height and width (px), a multiple of ``2**depth``.
    sim_size : int
        Size of each simulated image (px), cut into tiles; a multiple of ``tile_size``.
    batch_size, steps_per_epoch, epochs : int
    lr : float
        Peak learning rate (AdamW ~1e-3; Adadelta, as in the thesis, ~1.0).
    optimizer : {"adamw", "adadelta"}
    weight_decay : float
    schedule : {"cosine", "onecycle", "constant"}
        ``cosine``: linear warm-up over ``warmup_steps`` then cosine decay to ``lr * min_lr_ratio``;
        ``onecycle``: warm-up over 30 % of the steps then cosine decay to ``lr * min_lr_ratio``.
    warmup_steps : int
    min_lr_ratio : float
    loss : {"ce", "dice", "focal", "ce+dice"}
    class_weights : str or list of float
        ``"inverse"`` (inverse class frequency on ``weight_tiles`` training tiles),
        ``"inverse_sqrt"`` (its square root, fewer false positives), ``"none"``, or explicit weights.
    weight_tiles : int
    presets : dict
        Simulation preset -> share of the training, validation and test tiles.
    sim_overrides : list of str
        Simulation config overrides ``"section.key=value"`` for all presets.
    readout_share : float
        Share of the simulated images with real-readout effects drawn at random (several amplifiers,
        baselines along the row, odd columns; :func:`ccdseg.sim.readout.random_readout`).
    train_dir : str, optional
        Directory of simulated files (``ccdseg simulate``, also ``--background``) for the
        ``files`` source; ``val_fraction`` of its tiles validate. The test set stays simulated.
    labelled_dir : str, optional
        Directory of the user's labelled images (see :mod:`ccdseg.nn.labelled`) for the
        ``labelled`` source; ``val_fraction`` of its tiles validate.
    skip_bad_pairs : bool
        Train without the labelled files that do not pair up instead of refusing to start.
    sources : dict
        Source -> share of the training and validation tiles, sources being ``simulation``,
        ``files`` and ``labelled`` (e.g. ``{simulation = 0.5, labelled = 0.5}``). Empty: all
        tiles from ``train_dir``, else from ``labelled_dir``, else simulated.
    init : str, optional
        Fine-tune: start from this model file (``"shipped"``: the model shipped with ccdseg);
        its architecture and normalisation replace ``arch`` and ``normalization``.
    freeze_encoder : bool
        Keep the encoder's weights of the ``init`` model fixed; only the decoder learns.
    distill : float
        Weight of a term that keeps the class probabilities close to those of the ``init`` model
        (the mean per-pixel KL divergence; "learning without forgetting", Li & Hoiem 2017): a
        fine-tune learns new data without unlearning what the start model got right. 0: off.
    val_fraction : float
    augment : bool
        Random flips/rotations and readout jitter (gain, pedestal, noise) of training tiles.
    normalization : dict
        Parameters of :func:`ccdseg.nn.normalize.normalize`, stored in the model file.
    seed, val_seed, test_seed : int
        Seeds of training (data, augmentation, weights), validation tiles and test tiles.
    val_tiles, test_tiles : int
        Number of validation and test tiles.
    patience : int
        Stop after this many epochs without a better validation score; 0 never stops early.
    select_metric : {"cluster_f1", "mean_f1"}
        Validation score that picks the saved model.
    device : {"auto", "cpu", "cuda"}
    num_threads : int
        CPU threads; 0 uses every core.
    out : str
        Model file to write.
    """

    arch: object = "default"
    tile_size: int = 128
    sim_size: int = 256
    batch_size: int = 16
    steps_per_epoch: int = 100
    epochs: int = 20
    lr: float = 2e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    warmup_steps: int = 50
    min_lr_ratio: float = 0.05
    loss: str = "ce+dice"
    class_weights: object = "inverse_sqrt"
    weight_tiles: int = 64
    presets: dict = dataclasses.field(default_factory=lambda: dict(dataset.DEFAULT_PRESETS))
    sim_overrides: list = dataclasses.field(default_factory=list)
    readout_share: float = 0.0
    train_dir: str | None = None
    labelled_dir: str | None = None
    skip_bad_pairs: bool = False
    sources: dict = dataclasses.field(default_factory=dict)
    init: str | None = None
    freeze_encoder: bool = False
    distill: float = 0.0
    val_fraction: float = dataset.VAL_FRACTION
    augment: bool = True
    normalization: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    val_seed: int = 1
    test_seed: int = 2
    val_tiles: int = 64
    test_tiles: int = 64
    patience: int = 0
    select_metric: str = "cluster_f1"
    device: str = "auto"
    num_threads: int = 0
    out: str = "model.pt"

    def to_dict(self):
        """Plain dict, e.g. for the model file's metadata."""
        return dataclasses.asdict(self)


#: What each value must be, checked in this order (the first bad one is reported).
_RULES = (
    ("optimizer", one_of(("adamw", "adadelta"))),
    ("schedule", one_of(("cosine", "onecycle", "constant"))),
    ("loss", one_of(losses.LOSSES)),
    ("select_metric", one_of(("cluster_f1", "mean_f1"))),
    ("device", one_of(("auto", "cpu", "cuda"))),
    ("tile_size sim_size batch_size steps_per_epoch epochs weight_tiles val_tiles test_tiles lr", POSITIVE),
    ("weight_decay warmup_steps patience num_threads min_lr_ratio distill", NON_NEGATIVE),
    ("val_fraction", interval("(0, 1)")),
    ("readout_share", interval("[0, 1]")),
)


def load_train_config(path=None, overrides=None, **changes):
    """Build and validate a :class:`TrainConfig` from a TOML file, overrides and keywords.

    Parameters
    ----------
    path : str or Path, optional
        TOML file with top-level keys of :class:`TrainConfig`; ``arch``, ``presets`` and
        ``normalization`` may be tables.
    overrides : list of str, optional
        ``"key=value"`` (value in TOML syntax, bare words are strings); a dotted key sets
        one entry of a table, e.g. ``arch.base_width=8`` or ``presets.thesis=0.5``.
    **changes
        Last word, e.g. ``epochs=3`` (None values are skipped).

    Raises
    ------
    ConfigError
        Unreadable file, unknown key, wrong type or out-of-range value; the message names the key.
    """
    values = {} if path is None else read_toml(path, "training config")
    for key, value in parse_overrides(overrides):
        field, _, entry = key.partition(".")
        if entry:
            table = values.get(field, {} if field != "arch" else {"preset": values.get("arch", "default")})
            if isinstance(table, str):
                table = {"preset": table}
            values[field] = {**table, entry: value}
        else:
            values[key] = value
    values.update({key: value for key, value in changes.items() if value is not None})
    return validate_train_config(values)


def validate_train_config(values):
    """A validated :class:`TrainConfig` from a dict (or a config); raises :class:`ConfigError` naming the key."""
    if isinstance(values, TrainConfig):
        values = values.to_dict()
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown training config key {unknown[0]!r} (expected one of {', '.join(fields)})")
    config = TrainConfig()
    for key, value in values.items():
        read = _READERS.get(key)
        setattr(config, key, read(key, value) if read else coerce(key, fields[key].type, value, words=_WORDS))
    check_rules(config, _RULES)
    _check_shapes(config)
    _check_shares(config)
    if config.freeze_encoder and not config.init:
        raise ConfigError("freeze_encoder = true: needs init, the model whose encoder to keep")
    if config.distill and not config.init:
        raise ConfigError(f"distill = {config.distill}: needs init, the model whose probabilities to keep")
    return config


def _check_shapes(config):
    """Architecture, normalisation, tile and image sizes, and class weights fit together."""
    multiple = input_multiple(config.arch)
    validate_params(config.normalization)
    if config.tile_size % multiple:
        raise ConfigError(f"tile_size = {config.tile_size}: must be a multiple of 2**depth "
                          f"(twice that with a stem) = {multiple}")
    if config.sim_size % config.tile_size:
        raise ConfigError(f"sim_size = {config.sim_size}: must be a multiple of tile_size = {config.tile_size}")
    weights = config.class_weights
    if isinstance(weights, str) and weights not in ("inverse", "inverse_sqrt", "none"):
        raise ConfigError(f"class_weights = {weights!r}: must be 'inverse', 'inverse_sqrt', 'none' "
                          f"or a list of {N_CLASSES} numbers")
    if not isinstance(weights, str) and (len(weights) != N_CLASSES or min(weights) < 0 or sum(weights) <= 0):
        raise ConfigError(f"class_weights = {weights!r}: a list needs {N_CLASSES} non-negative numbers")


def _shares(table):
    """Whether ``table`` maps names to non-negative numbers (an empty table passes)."""
    return all(isinstance(v, (int, float)) and v >= 0 for v in table.values()) and (
        not table or sum(table.values()) > 0)


def _check_shares(config):
    """Presets and sources are shares, and a source of files has its directory."""
    if not config.presets or not _shares(config.presets):
        raise ConfigError(f"presets = {config.presets!r}: must map preset names to non-negative shares")
    if set(config.sources) - set(SOURCES) or not _shares(config.sources):
        raise ConfigError(f"sources = {config.sources!r}: must map {', '.join(SOURCES)} to non-negative shares")
    for name, key in (("files", "train_dir"), ("labelled", "labelled_dir")):
        if config.sources.get(name) and not getattr(config, key):
            raise ConfigError(f"sources.{name} = {config.sources[name]}: needs {key}")


def _read_arch(key, value):
    if not isinstance(value, (str, dict)):
        raise ConfigError(f"arch must be a preset name or a table, got {value!r}")
    return value


def _read_class_weights(key, value):
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return [float(v) for v in value]
    raise ConfigError(f"class_weights must be a name or a list of numbers, got {value!r}")


def _read_path(key, value):
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigError(f"{key} must be a path, got {value!r}")
    return os.fspath(value) if value else None


def _read_sim_overrides(key, value):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"sim_overrides must be a list of 'section.key=value' strings, got {value!r}")
    return value


#: Keys whose values are read by their own function rather than by their field's type.
_READERS = {"arch": _read_arch, "class_weights": _read_class_weights, "train_dir": _read_path,
            "labelled_dir": _read_path, "init": _read_path, "sim_overrides": _read_sim_overrides}


def output_paths(out):
    """Files written beside the model file ``out``, by role."""
    out = Path(out)
    return files(out.parent, out.stem, {"model": out.suffix, "checkpoint": ".ckpt",
                                        **{role: f".{role}.{ext}" for role, ext in
                                           (("log", "csv"), ("curves", "png"), ("confusion", "png"),
                                            ("examples", "png"), ("report", "txt"))}})
