"""Train the U-Net on simulated tiles, read top to bottom like nanoGPT's ``train.py``.

:func:`train` runs the whole recipe of a :class:`TrainConfig`: data, class weights, model,
optimiser, the loop with a validation pass after each epoch, best-model saving, early
stopping, and a final evaluation on held-out simulated tiles. Next to the model file
``MODEL.pt`` it writes:

- ``MODEL.log.csv``: one row per epoch (epoch, train_loss, val_loss, val_accuracy,
  val_f1_<class> for each class, lr, seconds);
- ``MODEL.curves.png``: loss, accuracy and F1 curves;
- ``MODEL.ckpt``: the resume file, rewritten after every epoch (network, optimiser,
  epoch, best score, log, torch random state); pass it to ``resume``;
- ``MODEL.report.txt``, ``MODEL.confusion.png``, ``MODEL.examples.png``: the test-set
  classification report (precision, recall, F1, IoU, support per class) and confusion
  matrix, and example tiles image | truth | prediction.

The data of epoch e depend only on (seed, e), so a resumed run sees the tiles the
uninterrupted run would have seen.

Launched by ``torchrun --nproc_per_node N`` (``WORLD_SIZE`` > 1), :func:`train` trains with
distributed data parallelism (gloo on the CPU, NCCL on GPUs): rank r draws its own tiles with
seed ``seed + r`` (rank 0 sees the tiles of a single-process run), ``batch_size`` tiles per
rank and step, and the gradients are averaged over the ranks so that every rank keeps the same
weights. Every rank validates (same tiles, same weights, same decisions); rank 0 alone writes
files and shows progress.
"""

import dataclasses
import itertools
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ccdseg import metrics, plots
from ccdseg.classes import CLUSTER, IGNORE, N_CLASSES, NAMES
from ccdseg.errors import ConfigError, InputError, ModelFileError
from ccdseg.io import atomic_path, write_text_atomic
from ccdseg.io import output_paths as files
from ccdseg.nn import dataset, labelled, losses
from ccdseg.nn.model import build_model, input_multiple, load_model, resolve_arch, save_model
from ccdseg.nn.normalize import normalize, validate_params
from ccdseg.sim.config import parse_override, read_toml

#: Column-name form of the class names ("hot pixel" -> "hot_pixel").
CLASS_KEYS = tuple(name.replace(" ", "_") for name in NAMES)
#: Sources of training tiles: the simulator, ``train_dir`` (simulated files), ``labelled_dir`` (the user's own).
SOURCES = ("simulation", "files", "labelled")
#: Simulated images whose training tiles are shuffled together, so that a batch mixes images and presets.
SIM_POOL = 4
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy",
               *(f"val_f1_{key}" for key in CLASS_KEYS), "lr", "seconds")


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
    train_dir: str | None = None
    labelled_dir: str | None = None
    skip_bad_pairs: bool = False
    sources: dict = dataclasses.field(default_factory=dict)
    init: str | None = None
    freeze_encoder: bool = False
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


_CHOICES = {"optimizer": ("adamw", "adadelta"), "schedule": ("cosine", "onecycle", "constant"),
            "loss": losses.LOSSES, "select_metric": ("cluster_f1", "mean_f1"),
            "device": ("auto", "cpu", "cuda")}
_POSITIVE = ("tile_size", "sim_size", "batch_size", "steps_per_epoch", "epochs", "weight_tiles",
             "val_tiles", "test_tiles", "lr")
_NON_NEGATIVE = ("weight_decay", "warmup_steps", "patience", "num_threads", "min_lr_ratio")


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
    for text in overrides or ():
        key, value = parse_override(text)
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
        setattr(config, key, _coerce(key, getattr(config, key), value))
    for key, choices in _CHOICES.items():
        if getattr(config, key) not in choices:
            raise ConfigError(f"{key} = {getattr(config, key)!r}: must be one of {', '.join(choices)}")
    for key in _POSITIVE:
        if not getattr(config, key) > 0:
            raise ConfigError(f"{key} = {getattr(config, key)!r}: must be > 0")
    for key in _NON_NEGATIVE:
        if not getattr(config, key) >= 0:
            raise ConfigError(f"{key} = {getattr(config, key)!r}: must be >= 0")
    if not 0 < config.val_fraction < 1:
        raise ConfigError(f"val_fraction = {config.val_fraction!r}: must be in (0, 1)")
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
    if not config.presets or any(not isinstance(v, (int, float)) or v < 0 for v in config.presets.values()) \
            or sum(config.presets.values()) <= 0:
        raise ConfigError(f"presets = {config.presets!r}: must map preset names to non-negative shares")
    if set(config.sources) - set(SOURCES) or any(not isinstance(v, (int, float)) or v < 0
                                                 for v in config.sources.values()) \
            or (config.sources and sum(config.sources.values()) <= 0):
        raise ConfigError(f"sources = {config.sources!r}: must map {', '.join(SOURCES)} to non-negative shares")
    for name, key in (("files", "train_dir"), ("labelled", "labelled_dir")):
        if config.sources.get(name) and not getattr(config, key):
            raise ConfigError(f"sources.{name} = {config.sources[name]}: needs {key}")
    if config.freeze_encoder and not config.init:
        raise ConfigError("freeze_encoder = true: needs init, the model whose encoder to keep")
    return config


def _coerce(key, default, value):
    """``value`` checked against the type of the field's default."""
    if key == "arch":
        if not isinstance(value, (str, dict)):
            raise ConfigError(f"arch must be a preset name or a table, got {value!r}")
        return value
    if key == "class_weights":
        if isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [float(v) for v in value]
        raise ConfigError(f"class_weights must be a name or a list of numbers, got {value!r}")
    if key in ("train_dir", "labelled_dir", "init"):
        if value is not None and not isinstance(value, (str, os.PathLike)):
            raise ConfigError(f"{key} must be a path, got {value!r}")
        return os.fspath(value) if value else None
    expected = type(default)
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if type(value) is not expected:
        raise ConfigError(f"{key} must be of type {expected.__name__}, got {value!r}")
    if key == "sim_overrides" and not all(isinstance(v, str) for v in value):
        raise ConfigError(f"sim_overrides must be a list of 'section.key=value' strings, got {value!r}")
    return value


def output_paths(out):
    """Files written beside the model file ``out``, by role."""
    out = Path(out)
    return files(out.parent, out.stem, {"model": out.suffix, "checkpoint": ".ckpt",
                                        **{role: f".{role}.{ext}" for role, ext in
                                           (("log", "csv"), ("curves", "png"), ("confusion", "png"),
                                            ("examples", "png"), ("report", "txt"))}})


def lr_at(step, total_steps, config):
    """Learning rate of optimiser step ``step`` (0-based) out of ``total_steps``."""
    if config.schedule == "constant":
        return config.lr
    warmup = config.warmup_steps if config.schedule == "cosine" else int(0.3 * total_steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1.0 + math.cos(math.pi * progress))


def resolve_device(name):
    """torch.device for ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device = 'cuda': no CUDA device is available (use 'cpu' or 'auto')")
    return torch.device(name)


def init_distributed(device):
    """Join the process group of a ``torchrun`` launch; ``(rank, world_size, device)``.

    Without ``WORLD_SIZE`` > 1 in the environment this is a single process: ``(0, 1, device)``.
    On CUDA each rank takes the GPU of its ``LOCAL_RANK``.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def _sequence(seed, stream, *index):
    """Independent seed for each random stream (0 train, 1 validation, 2 test, 3 augmentation, 4 weights)."""
    return np.random.SeedSequence(seed, spawn_key=(stream, *index))


def source_shares(config):
    """Share of the tiles from each source (see ``TrainConfig.sources``), zero shares left out."""
    if config.sources:
        return {name: float(share) for name, share in config.sources.items() if share > 0}
    if config.train_dir:
        return {"files": 1.0}
    return {"labelled": 1.0} if config.labelled_dir else {"simulation": 1.0}


def read_sources(config):
    """Read the image files of the file sources ``config`` uses.

    Returns
    -------
    pairs : dict
        ``"files"`` and/or ``"labelled"`` -> list of (name, image, labels).
    skipped : list of str
        One line per labelled file left out (only with ``skip_bad_pairs``).

    Raises
    ------
    InputError
        A labelled file that does not pair up (unless ``skip_bad_pairs``; the message lists
        every problem, one per line), or no usable labelled image at all.
    """
    shares = source_shares(config)
    pairs, skipped = {}, []
    if "files" in shares:
        pairs["files"] = dataset.read_simulated_dir(config.train_dir)
    if "labelled" in shares:
        pairs["labelled"], skipped = labelled.find_labelled_pairs(config.labelled_dir)
        if skipped and not config.skip_bad_pairs:
            raise InputError(config.labelled_dir, f"{len(skipped)} labelled file(s) cannot be used (fix them, or "
                                                  "set skip_bad_pairs = true to train without them):\n  "
                                                  + "\n  ".join(skipped))
        if not pairs["labelled"]:
            raise InputError(config.labelled_dir, "no labelled image (NAME.fits with NAME_labels.fits/.png/.npy)")
    return pairs, skipped


def _source_tiles(config, name, split, seed, pairs):
    """Tiles of one source: endless training tiles (``split="train"``) or the validation tiles."""
    if name == "simulation":
        return dataset.simulated_tiles(config.presets, config.tile_size, seed, config.sim_overrides,
                                       config.sim_size, config.normalization,
                                       pool=SIM_POOL if split == "train" else 1)
    return dataset.file_tiles(pairs[name], config.tile_size, split, config.val_fraction, config.seed,
                              order_seed=seed if split == "train" else None, normalization=config.normalization)


def training_tiles(config, sequence, pairs=None):
    """Endless training tiles drawn with the seed ``sequence``, mixed from the sources.

    ``pairs`` is what :func:`read_sources` returned (needed for the file sources).
    """
    shares = source_shares(config)
    if len(shares) == 1:
        return _source_tiles(config, next(iter(shares)), "train", sequence, pairs)
    # a fresh copy: spawning from the caller's sequence would change what it gives next time
    children = np.random.SeedSequence(sequence.entropy, spawn_key=sequence.spawn_key).spawn(len(shares) + 1)
    streams = {name: _source_tiles(config, name, "train", child, pairs) for name, child in zip(shares, children, strict=False)}
    return dataset.mixed_tiles(streams, shares, children[-1])


def held_out_tiles(config, which, pairs=None):
    """The fixed validation (``which="val"``) or test tiles: lists of images, labels and statistics.

    Validation tiles come from the sources in their shares (the file sources' validation
    splits; ``pairs`` as :func:`read_sources` returned them); test tiles are simulated.
    """
    count = config.val_tiles if which == "val" else config.test_tiles
    shares = source_shares(config) if which == "val" else {"simulation": 1.0}
    seed = _sequence(config.val_seed, 1) if which == "val" else _sequence(config.test_seed, 2)
    tiles, total = [], sum(shares.values())
    for k, (name, share) in enumerate(shares.items()):
        wanted = count - len(tiles) if k == len(shares) - 1 else round(count * share / total)
        tiles.extend(itertools.islice(_source_tiles(config, name, "val", seed, pairs), wanted))
    return tuple(map(list, zip(*tiles, strict=False)))


def freeze_encoder(net):
    """Keep the encoder of ``net`` as it is: no gradients, and its normalisation statistics fixed."""
    for block in net.encoder:
        block.requires_grad_(False)
        block.register_forward_pre_hook(_stay_in_eval_mode)


def _stay_in_eval_mode(module, _inputs):
    # evaluate() puts the whole net back in training mode; this undoes it before each forward pass
    module.eval()


def parent_facts(model):
    """What the model file of a fine-tuned model records about the model it started from."""
    facts = {key: model.metadata.get(key) for key in ("package_version", "epoch", "parent")}
    train_config = model.metadata.get("train_config") or {}
    return {"file": Path(model.path).name, **facts,
            "test_metrics": (model.metadata.get("metrics") or {}).get("test"),
            "trained_on": {key: train_config.get(key) for key in ("presets", "sources", "train_dir", "labelled_dir")}}


def estimate_class_weights(config, pairs=None):
    """Class weights of the loss, from the label counts of ``weight_tiles`` training tiles."""
    if not isinstance(config.class_weights, str):
        return np.asarray(config.class_weights, dtype=np.float64)
    if config.class_weights == "none":
        return None
    tiles = training_tiles(config, _sequence(config.seed, 4), pairs)
    counts = sum(losses.class_counts(labels) for _, labels, _ in itertools.islice(tiles, config.weight_tiles))
    weights = losses.class_weights_from_counts(counts)
    if config.class_weights == "inverse_sqrt":
        weights = np.sqrt(weights)
        weights *= counts.sum() / np.sum(weights * counts)  # keep the pixel-averaged weight at 1
    return weights


def make_batch(tiles, config, rng, device):
    """Network input (N, 1, S, S) and labels (N, S, S) from raw tiles; augmented unless ``rng`` is None."""
    images, labels = [], []
    for image, label, stats in tiles:
        if rng is not None:
            image, stats = dataset.jitter(image, stats, rng)
        image = normalize(image, config.normalization, stats)
        if rng is not None:
            image, label = dataset.flip_rotate(image, label, rng)
        images.append(image)
        labels.append(label)
    x = torch.from_numpy(np.stack(images)[:, None]).to(device).contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(np.stack(labels).astype(np.int64)).to(device)
    return x, y


def confusion(logits, labels):
    """Confusion matrix (true x predicted) of a batch, counted on the device."""
    pred = logits.argmax(1)
    valid = labels != IGNORE
    index = labels[valid] * N_CLASSES + pred[valid]
    return torch.bincount(index, minlength=N_CLASSES ** 2).reshape(N_CLASSES, N_CLASSES)


@torch.inference_mode()
def evaluate(net, tiles, config, loss_fn, device):
    """Mean loss, confusion matrix and predictions of ``net`` on held-out ``tiles`` (images, labels, stats)."""
    net.eval()
    total_loss, matrix, predictions = 0.0, torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long, device=device), []
    images = tiles[0]
    for start in range(0, len(images), config.batch_size):
        x, y = make_batch(zip(*(part[start:start + config.batch_size] for part in tiles), strict=False), config, None, device)
        logits = net(x)
        total_loss += loss_fn(logits, y).item() * len(x)
        matrix += confusion(logits, y)
        predictions.extend(logits.argmax(1).to(torch.uint8).cpu().numpy())
    net.train()
    return total_loss / len(images), matrix.cpu().numpy(), predictions


def scores(matrix):
    """Pixel accuracy, per-class F1 and the two selection scores of a confusion matrix."""
    f1 = np.asarray(metrics.class_scores(matrix)["f1"], dtype=float)
    return {"accuracy": metrics.pixel_accuracy(matrix), "f1": f1,
            "cluster_f1": float(np.nan_to_num(f1[CLUSTER])), "mean_f1": float(np.nanmean(f1))}


def train(config, resume=None, progress=True):
    """Train a model as ``config`` says and write it, with its log, plots and report.

    Parameters
    ----------
    config : TrainConfig, dict or str/Path
        The recipe, or a TOML file of it (see :func:`load_train_config`).
    resume : str or Path, optional
        A ``MODEL.ckpt`` resume file: continue after its last finished epoch.
    progress : bool
        Show a progress bar per epoch.

    Returns
    -------
    Path
        The model file (the epoch with the best validation score).

    Raises
    ------
    ConfigError
        Invalid config, or a resume file of another architecture.
    ModelFileError
        Unreadable resume file.
    """
    if isinstance(config, (str, os.PathLike)):
        config = load_train_config(config)
    config = validate_train_config(config)
    parent = load_model(None if config.init == "shipped" else config.init) if config.init else None
    if parent is not None:  # fine-tuning keeps the starting model's architecture and input scaling
        config = validate_train_config({**config.to_dict(), "arch": parent.arch,
                                        "normalization": parent.normalization})
    paths = output_paths(config.out)
    rank, world, device = init_distributed(resolve_device(config.device))
    if device.type == "cpu":  # ranks on one machine share its cores
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(config.num_threads or max(1, os.cpu_count() // ranks_here))
    torch.manual_seed(config.seed)

    # data: training tiles are drawn per epoch; validation and test tiles are fixed lists
    pairs, skipped = read_sources(config)
    if progress and rank == 0:
        for line in skipped:
            tqdm.write(f"skipped: {line}")
    val_tiles = held_out_tiles(config, "val", pairs)
    weights = estimate_class_weights(config, pairs)
    loss_fn = losses.make_loss(config.loss, weights, IGNORE)

    # model and optimiser
    net = build_model(config.arch)
    if parent is not None:
        net.load_state_dict(parent.net.state_dict())
    if config.freeze_encoder:
        freeze_encoder(net)
    net = net.to(device).to(memory_format=torch.channels_last)
    trainable = [p for p in net.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adadelta(trainable, lr=config.lr, weight_decay=config.weight_decay)
    start_epoch, best, best_epoch, stale, log = 0, -np.inf, 0, 0, []
    if resume is not None:
        state = _load_checkpoint(resume, config, device)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        start_epoch, best, best_epoch, stale, log = (state["epoch"], state["best"], state["best_epoch"],
                                                     state["stale"], state["log"])
    total_steps = config.epochs * config.steps_per_epoch
    # the wrapper averages the gradients over the ranks (and starts them from rank 0's weights)
    forward = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    metadata = {"train_config": config.to_dict(), "class_weights": None if weights is None else weights.tolist()}
    if parent is not None:
        metadata["parent"] = parent_facts(parent)

    for epoch in range(start_epoch, config.epochs):
        if config.patience and stale >= config.patience:
            break
        started = time.perf_counter()
        tiles = training_tiles(config, _sequence(config.seed + rank, 0, epoch), pairs)
        rng = np.random.default_rng(_sequence(config.seed + rank, 3, epoch)) if config.augment else None
        running_loss, matrix = 0.0, torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long, device=device)
        bar = tqdm(range(config.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress or rank > 0, leave=False)
        for step in bar:
            lr = lr_at(epoch * config.steps_per_epoch + step, total_steps, config)
            for group in optimizer.param_groups:
                group["lr"] = lr
            x, y = make_batch(itertools.islice(tiles, config.batch_size), config, rng, device)
            logits = forward(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            matrix += confusion(logits.detach(), y)
            if step % 10 == 0 or step == config.steps_per_epoch - 1:
                f1 = scores(matrix.cpu().numpy())["f1"]
                bar.set_postfix(loss=f"{running_loss / (step + 1):.3f}",
                                f1="/".join(f"{v:.2f}" for v in np.nan_to_num(f1)))

        # validation, log, best model, resume file
        val_loss, val_matrix, _ = evaluate(net, val_tiles, config, loss_fn, device)
        val = scores(val_matrix)
        row = {"epoch": epoch + 1, "train_loss": running_loss / config.steps_per_epoch, "val_loss": val_loss,
               "val_accuracy": val["accuracy"], **{f"val_f1_{k}": float(v) for k, v in zip(CLASS_KEYS, val["f1"], strict=False)},
               "lr": lr, "seconds": time.perf_counter() - started}
        log.append(row)
        if progress and rank == 0:
            tqdm.write(f"epoch {epoch + 1}: train loss {row['train_loss']:.4f}, val loss {val_loss:.4f}, "
                       f"accuracy {val['accuracy']:.4f}, F1 " + ", ".join(
                           f"{name} {v:.3f}" for name, v in zip(NAMES, val["f1"], strict=False)) + f" ({row['seconds']:.0f} s)")
        if val[config.select_metric] > best:
            best, best_epoch, stale = val[config.select_metric], epoch + 1, 0
            if rank == 0:
                save_model(paths["model"], net, config.arch, config.normalization, epoch=epoch + 1,
                           metrics={"val": _plain_scores(val, val_loss)}, **metadata)
        else:
            stale += 1
        if rank == 0:
            _write_log(paths["log"], log)
            _save_checkpoint(paths["checkpoint"], net, optimizer, epoch + 1, best, best_epoch, stale, log, config)

    if world > 1:
        dist.destroy_process_group()
        if rank > 0:  # rank 0 writes the plots and the test report
            return paths["model"]

    if not paths["model"].exists():
        raise ModelFileError(paths["model"], "no epoch was trained (epochs already reached by the resume file?)")
    plots.plot_curves(log, paths["curves"])
    report = test_report(paths, config, loss_fn, device, log, best_epoch)
    if progress:
        print(report)
    return paths["model"]


def test_report(paths, config, loss_fn, device, log, best_epoch):
    """Evaluate the saved model on the test tiles; write the report, confusion and example plots."""
    model = load_model(paths["model"], device=device)
    net = model.net.to(memory_format=torch.channels_last)
    images, labels, stats = tiles = held_out_tiles(config, "test")
    test_loss, matrix, predictions = evaluate(net, tiles, config, loss_fn, device)
    test = scores(matrix)
    save_model(paths["model"], net, model.arch, model.normalization,
               **{**model.metadata, "metrics": {**model.metadata["metrics"], "test": _plain_scores(test, test_loss)}})
    table = metrics.class_scores(matrix)
    corner = "true \\ predicted"
    width = max(len(corner), *(len(name) for name in NAMES))
    matrix_text = "\n".join([f"{corner:>{width}}  " + "".join(f"{n:>12}" for n in NAMES)] +
                            [f"{name:>{width}}  " + "".join(f"{v:>12d}" for v in counts)
                             for name, counts in zip(NAMES, matrix, strict=False)])
    report = "\n".join([
        f"ccdseg training report: {paths['model']}",
        f"best epoch {best_epoch} of {len(log)} run ({config.select_metric} on {config.val_tiles} validation tiles)",
        f"test set: {config.test_tiles} simulated tiles of {config.tile_size} px (presets {config.presets}, "
        f"seed {config.test_seed}), loss {test_loss:.4f}",
        "", "classification report (pixels):", metrics.format_report(matrix),
        "", "IoU per class: " + ", ".join(f"{row['name']} {row['iou']:.3f}" for row in table),
        "", "confusion matrix (pixels, rows true, columns predicted):", matrix_text, ""])
    write_text_atomic(paths["report"], report, overwrite=True)
    plots.plot_confusion(matrix, paths["confusion"])
    # examples: the test tiles showing the most classes, stacked into one column
    order = sorted(range(len(images)), key=lambda i: (-len(np.unique(labels[i])), i))[:3]
    plots.plot_comparison(np.concatenate([normalize(images[i], config.normalization, stats[i]) for i in order]),
                          np.concatenate([labels[i] for i in order]),
                          np.concatenate([predictions[i] for i in order]), paths["examples"],
                          title="test tiles (normalised image)")
    return report


def _plain_scores(values, loss):
    return {"loss": float(loss), "accuracy": float(values["accuracy"]),
            **{f"f1_{key}": float(v) for key, v in zip(CLASS_KEYS, values["f1"], strict=False)}}


def _write_log(path, rows):
    lines = [",".join(LOG_COLUMNS)] + [",".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                                                for c in LOG_COLUMNS) for row in rows]
    write_text_atomic(path, "\n".join(lines) + "\n", overwrite=True)


def _save_checkpoint(path, net, optimizer, epoch, best, best_epoch, stale, log, config):
    state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "best": float(best),
             "best_epoch": best_epoch, "stale": stale, "log": log, "torch_rng": torch.get_rng_state(),
             "arch": resolve_arch(config.arch)}
    with atomic_path(path, overwrite=True) as temp:
        torch.save(state, temp)


def _load_checkpoint(path, config, device):
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # torch raises many types for damaged files; all mean the same here
        raise ModelFileError(path, f"not a readable resume file ({type(error).__name__})") from error
    if not isinstance(state, dict) or "optimizer" not in state:
        raise ModelFileError(path, "not a ccdseg resume file (MODEL.ckpt)")
    if state["arch"] != resolve_arch(config.arch):
        raise ConfigError(f"{path}: the resume file's architecture differs from the config's arch")
    return state
