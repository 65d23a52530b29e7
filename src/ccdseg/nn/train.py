"""Train the U-Net on simulated tiles, read top to bottom like nanoGPT's ``train.py``.

:func:`train` runs the whole recipe of a :class:`~ccdseg.nn.train_config.TrainConfig`: data, class weights, model,
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
from ccdseg.nn import dataset, labelled, losses
from ccdseg.nn.model import build_model, load_model, resolve_arch, save_model
from ccdseg.nn.normalize import normalize
from ccdseg.nn.train_config import load_train_config, output_paths, validate_train_config

#: Column-name form of the class names ("hot pixel" -> "hot_pixel").
CLASS_KEYS = tuple(name.replace(" ", "_") for name in NAMES)
#: Simulated images whose training tiles are shuffled together, so that a batch mixes images and presets.
SIM_POOL = 4
LOG_COLUMNS = ("epoch", "train_loss", "val_loss", "val_accuracy",
               *(f"val_f1_{key}" for key in CLASS_KEYS), "lr", "seconds")


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
                                       pool=SIM_POOL if split == "train" else 1, readout_share=config.readout_share)
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
    streams = {name: _source_tiles(config, name, "train", child, pairs)
               for name, child in zip(shares, children[:-1], strict=True)}
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
    return tuple(map(list, zip(*tiles, strict=True)))


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
        batch = zip(*(part[start:start + config.batch_size] for part in tiles), strict=True)
        x, y = make_batch(batch, config, None, device)
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
        The recipe, or a TOML file of it (see :func:`ccdseg.nn.train_config.load_train_config`).
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
    config, parent = _config_and_parent(config)
    paths = output_paths(config.out)
    rank, world, device = init_distributed(resolve_device(config.device))
    set_cpu_threads(config, device)
    torch.manual_seed(config.seed)
    talk = progress and rank == 0  # rank 0 alone shows progress

    # data: training tiles are drawn per epoch; validation and test tiles are fixed lists
    pairs, skipped = read_sources(config)
    if talk:
        for line in skipped:
            tqdm.write(f"skipped: {line}")
    val_tiles = held_out_tiles(config, "val", pairs)
    weights = estimate_class_weights(config, pairs)
    loss_fn = losses.make_loss(config.loss, weights, IGNORE)

    # model and optimiser
    net = make_net(config, parent, device)
    optimizer = make_optimizer([p for p in net.parameters() if p.requires_grad], config)
    start_epoch, best, best_epoch, stale, log = 0, -np.inf, 0, 0, []
    if resume is not None:
        start_epoch, best, best_epoch, stale, log = _resume(resume, config, device, net, optimizer)
    # the wrapper averages the gradients over the ranks (and starts them from rank 0's weights)
    forward = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    metadata = {"train_config": config.to_dict(), "class_weights": None if weights is None else weights.tolist()}
    if parent is not None:
        metadata["parent"] = parent_facts(parent)
    teacher = make_teacher(config, parent, device)

    for epoch in range(start_epoch, config.epochs):
        if config.patience and stale >= config.patience:
            break
        started = time.perf_counter()
        tiles = training_tiles(config, _sequence(config.seed + rank, 0, epoch), pairs)
        rng = np.random.default_rng(_sequence(config.seed + rank, 3, epoch)) if config.augment else None
        train_loss, lr = train_epoch(forward, optimizer, loss_fn, tiles, rng, epoch, config, device,
                                     progress=talk, teacher=teacher)

        # validation, log, best model, resume file
        val_loss, val_matrix, _ = evaluate(net, val_tiles, config, loss_fn, device)
        val = scores(val_matrix)
        row = {"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss, "val_accuracy": val["accuracy"],
               **{f"val_f1_{k}": float(v) for k, v in zip(CLASS_KEYS, val["f1"], strict=True)},
               "lr": lr, "seconds": time.perf_counter() - started}
        log.append(row)
        if talk:
            tqdm.write(_epoch_line(row, val))
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


def set_cpu_threads(config, device):
    """On the CPU, use ``config.num_threads`` threads, else share the machine's cores with the other ranks on it."""
    if device.type == "cpu":
        ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(config.num_threads or max(1, os.cpu_count() // ranks_here))


def _config_and_parent(config):
    """The validated config (a TOML file's, if a path) and the model it fine-tunes (None when it starts afresh)."""
    if isinstance(config, (str, os.PathLike)):
        config = load_train_config(config)
    config = validate_train_config(config)
    parent = load_model(None if config.init == "shipped" else config.init) if config.init else None
    if parent is not None:  # fine-tuning keeps the starting model's architecture and input scaling
        config = validate_train_config({**config.to_dict(), "arch": parent.arch,
                                        "normalization": parent.normalization})
    return config, parent


def make_net(config, parent, device):
    """The network of ``config.arch`` on ``device``: the weights of ``parent`` if given, encoder frozen if asked."""
    net = build_model(config.arch)
    if parent is not None:
        net.load_state_dict(parent.net.state_dict())
    if config.freeze_encoder:
        freeze_encoder(net)
    return net.to(device).to(memory_format=torch.channels_last)


def make_teacher(config, parent, device):
    """The fixed start model whose probabilities the ``distill`` term keeps (None without it)."""
    if not config.distill:
        return None
    teacher = make_net(config, parent, device).eval()
    teacher.requires_grad_(False)
    return teacher


def make_optimizer(parameters, config):
    """The optimiser ``config.optimizer`` of ``parameters``, at ``config.lr`` and ``config.weight_decay``."""
    kind = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adadelta
    return kind(parameters, lr=config.lr, weight_decay=config.weight_decay)


def train_epoch(forward, optimizer, loss_fn, tiles, rng, epoch, config, device, progress=True, teacher=None):
    """One epoch of ``config.steps_per_epoch`` optimiser steps; returns the mean training loss and the last rate.

    With a ``teacher`` (:func:`make_teacher`) the loss adds ``config.distill`` times the distillation term.
    """
    total_steps = config.epochs * config.steps_per_epoch
    running_loss, matrix = 0.0, torch.zeros(N_CLASSES, N_CLASSES, dtype=torch.long, device=device)
    bar = tqdm(range(config.steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
               leave=False)
    for step in bar:
        lr = lr_at(epoch * config.steps_per_epoch + step, total_steps, config)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = make_batch(itertools.islice(tiles, config.batch_size), config, rng, device)
        logits = forward(x)
        loss = loss_fn(logits, y)
        if teacher is not None:
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = loss + config.distill * losses.distillation_loss(logits, teacher_logits)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running_loss += loss.item()
        matrix += confusion(logits.detach(), y)
        if step % 10 == 0 or step == config.steps_per_epoch - 1:
            f1 = scores(matrix.cpu().numpy())["f1"]
            bar.set_postfix(loss=f"{running_loss / (step + 1):.3f}",
                            f1=", ".join(f"{name} {v:.2f}" for name, v in zip(NAMES, np.nan_to_num(f1), strict=True)))
    return running_loss / config.steps_per_epoch, lr


def _epoch_line(row, val):
    scores_text = ", ".join(f"{name} {v:.3f}" for name, v in zip(NAMES, val["f1"], strict=True))
    return (f"epoch {row['epoch']}: train loss {row['train_loss']:.4f}, val loss {row['val_loss']:.4f}, "
            f"accuracy {val['accuracy']:.4f}, F1 {scores_text} ({row['seconds']:.0f} s)")


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
                             for name, counts in zip(NAMES, matrix, strict=True)])
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
            **{f"f1_{key}": float(v) for key, v in zip(CLASS_KEYS, values["f1"], strict=True)}}


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


def _resume(path, config, device, net, optimizer):
    """Restore ``net``, ``optimizer`` and torch's random state from a resume file; its loop state."""
    state = _load_checkpoint(path, config, device)
    net.load_state_dict(state["net"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["torch_rng"].cpu())
    return state["epoch"], state["best"], state["best_epoch"], state["stale"], state["log"]


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
