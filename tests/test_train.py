import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from ccdseg.classes import BACKGROUND
from ccdseg.cli import train as cli_train
from ccdseg.errors import ConfigError
from ccdseg.nn.model import load_model
from ccdseg.nn.train import LOG_COLUMNS, held_out_tiles, lr_at, train
from ccdseg.nn.train_config import load_train_config, output_paths

TINY = Path(__file__).parents[1] / "configs" / "train_tiny.toml"
DEFAULT = Path(__file__).parents[1] / "configs" / "train_default.toml"


def read_log(path):
    with open(path, newline="") as stream:
        reader = csv.DictReader(stream)
        return reader.fieldnames, [{k: float(v) for k, v in row.items()} for row in reader]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """configs/train_tiny.toml trained once (about 30 s on one core)."""
    config = load_train_config(TINY, out=str(tmp_path_factory.mktemp("tiny") / "tiny.pt"))
    return config, train(config, progress=False)


def test_tiny_training_learns_clusters(tiny_run):
    config, path = tiny_run
    columns, rows = read_log(output_paths(path)["log"])
    assert tuple(columns) == LOG_COLUMNS
    assert [row["epoch"] for row in rows] == list(range(1, config.epochs + 1))
    assert rows[-1]["train_loss"] < 0.8 * rows[0]["train_loss"]
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]

    model = load_model(path)
    test = model.metadata["metrics"]["test"]
    # 400 steps of a 2 k-parameter net: cluster F1 reaches 0.73-0.79 on the held-out tiles (seeds 0-2); the
    # all-background predictor scores 0 and has the accuracy of the background share
    assert test["f1_cluster"] > 0.5
    _, labels, _ = held_out_tiles(config, "test")
    background_share = np.mean(np.concatenate(labels) == BACKGROUND)
    # it labels 30-47 % of the other pixels (mostly glow) right beyond that predictor (seeds 0-2)
    assert test["accuracy"] > background_share + 0.25 * (1 - background_share)
    assert model.metadata["train_config"]["tile_size"] == config.tile_size
    assert 1 <= model.metadata["epoch"] <= config.epochs


def test_training_writes_report_and_plots(tiny_run):
    _, path = tiny_run
    paths = output_paths(path)
    for role in ("curves", "confusion", "examples"):
        assert paths[role].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = paths["report"].read_text()
    for word in ("precision", "recall", "f1-score", "iou", "support", "cluster", "hot pixel", "confusion matrix"):
        assert word in report


def test_resume_continues_from_saved_epoch(tmp_path):
    overrides = ["epochs=3", "steps_per_epoch=5", "val_tiles=4", "test_tiles=4", "weight_tiles=4"]
    whole = load_train_config(TINY, overrides, out=str(tmp_path / "whole.pt"))
    train(whole, progress=False)
    first = load_train_config(TINY, overrides, out=str(tmp_path / "part.pt"), epochs=2)
    train(first, progress=False)
    resumed = load_train_config(TINY, overrides, out=str(tmp_path / "part.pt"))
    train(resumed, resume=tmp_path / "part.ckpt", progress=False)

    _, rows = read_log(tmp_path / "part.log.csv")
    _, whole_rows = read_log(tmp_path / "whole.log.csv")
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    # the resumed run sees the same tiles and weights as the uninterrupted one
    for row, expected in zip(rows, whole_rows, strict=True):
        assert row["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-4)
        assert row["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-4)
    state = torch.load(tmp_path / "part.ckpt", weights_only=True)
    assert state["epoch"] == 3


def test_config_file_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('epochs = 2\nlearning_rate = 0.1\n')
    with pytest.raises(ConfigError, match="learning_rate"):
        load_train_config(bad)


@pytest.mark.parametrize("override, key", [("bogus=1", "bogus"), ("lr=-1", "lr"), ("optimizer=sgd", "optimizer"),
                                           ("epochs=many", "epochs"), ("tile_size=100", "tile_size"),
                                           ("arch.widht=3", "arch"), ("val_fraction=1.0", "val_fraction"),
                                           ("class_weights=[1, 2]", "class_weights"),
                                           ("sources.labelled=1.0", "sources.labelled")])
def test_override_errors_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key):
        load_train_config(overrides=[override])


def test_committed_configs_and_overrides():
    default = load_train_config(DEFAULT)
    assert default.arch == "default" and default.tile_size in (128, 256)
    assert set(default.presets) == {"damic", "skipper", "damicm", "thesis"}
    tiny = load_train_config(TINY, ["arch.base_width=4", "presets.thesis=1.0", "lr=1e-3"], epochs=7)
    assert tiny.arch["base_width"] == 4 and tiny.arch["depth"] == 2
    assert tiny.presets["thesis"] == 1.0 and tiny.lr == 1e-3 and tiny.epochs == 7


def test_learning_rate_schedule():
    config = load_train_config(overrides=["lr=1.0", "warmup_steps=10", "min_lr_ratio=0.1"])
    rates = [lr_at(step, 110, config) for step in range(110)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert np.all(np.diff(rates[10:]) <= 0) and rates[-1] == pytest.approx(0.1, abs=1e-3)


def test_cli_train_parses_and_reports_errors(tmp_path):
    parser = argparse.ArgumentParser()
    cli_train.register(parser.add_subparsers())
    args = parser.parse_args(["train", "--config", str(TINY), "--out", str(tmp_path / "m.pt"),
                              "--set", "nonsense=1", "--epochs", "1"])
    with pytest.raises(ConfigError, match="nonsense"):
        args.func(args)
