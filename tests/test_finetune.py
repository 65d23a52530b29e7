"""Fine-tuning on simulated events pasted onto the real DAMIC-M frame beats the simulation-only start."""

from pathlib import Path

import pytest
import torch

from ccdseg import io
from ccdseg.calib.gain import resolve_gain
from ccdseg.classes import IGNORE
from ccdseg.errors import ConfigError
from ccdseg.nn import losses
from ccdseg.nn.dataset import image_tiles
from ccdseg.nn.model import load_model
from ccdseg.nn.train import evaluate, make_batch, scores, train
from ccdseg.nn.train_config import load_train_config
from ccdseg.sim.paste import paste_events
from ccdseg.sim.truth import write_simulation
from conftest import DAMICM_SAMPLE

TINY = Path(__file__).parents[1] / "configs" / "train_tiny.toml"

SMALL = {"test_tiles": 8, "val_tiles": 8, "weight_tiles": 8, "num_threads": 1, "device": "cpu"}


def pasted_tiles(frame, seed, size=64):
    """Images, labels and normalisation statistics of the tiles of a frame with events pasted on it."""
    sim = paste_events(frame.data, "skipper", resolve_gain(frame.data, (frame.header,), required=True)[0], seed=seed)
    return tuple(map(list, zip(*image_tiles(sim.image, sim.labels, size), strict=True)))


def cluster_f1(path, tiles):
    model = load_model(path)
    config = load_train_config(TINY, normalization=model.normalization, **SMALL)
    _, matrix, _ = evaluate(model.net, tiles, config, losses.make_loss("ce", None, IGNORE), "cpu")
    return scores(matrix)["cluster_f1"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny model trained on pure simulation, then fine-tuned on pasted CCD_A/CCD_B frames (about 40 s)."""
    root = tmp_path_factory.mktemp("finetune")
    frames = {frame.name: frame for frame in io.read_images(DAMICM_SAMPLE)}
    for index, (name, seed) in enumerate([("CCD_A", 10), ("CCD_B", 11), ("CCD_A", 12), ("CCD_B", 13)]):
        frame = frames[name]
        gain, _ = resolve_gain(frame.data, (frame.header,), required=True)
        sim = paste_events(frame.data, "skipper", gain, seed=seed)
        write_simulation(sim, root / "pasted" / f"sim_{index:05d}.fits")
    base = train(load_train_config(TINY, epochs=3, out=str(root / "base.pt"), **SMALL), progress=False)
    tuned = train(load_train_config(TINY, epochs=3, init=str(base), train_dir=str(root / "pasted"), lr=3e-3,
                                    sources={"simulation": 0.25, "files": 0.75}, out=str(root / "tuned.pt"),
                                    **SMALL), progress=False)
    frozen = train(load_train_config(TINY, epochs=1, steps_per_epoch=3, init=str(base), freeze_encoder=True,
                                     train_dir=str(root / "pasted"), out=str(root / "frozen.pt"), **SMALL),
                   progress=False)
    # the same short fine-tune with and without the term that keeps the start model's probabilities
    kept = {name: train(load_train_config(TINY, epochs=1, steps_per_epoch=4, init=str(base), lr=3e-3, distill=distill,
                                          train_dir=str(root / "pasted"), out=str(root / f"{name}.pt"), **SMALL),
                        progress=False)
            for name, distill in (("free", 0.0), ("distilled", 50.0))}
    return base, tuned, frozen, frames, kept


def test_finetuning_on_pasted_real_frames_improves_cluster_f1(runs):
    base, tuned, _, frames, _ = runs
    # held out: another CCD of the module and seeds never used in training
    tiles = pasted_tiles(frames["CCD_C"], seed=99)
    before, after = cluster_f1(base, tiles), cluster_f1(tuned, tiles)
    print(f"held-out pasted CCD_C cluster F1: start {before:.3f}, fine-tuned {after:.3f}")
    assert after > before + 0.05


def test_init_records_parent_and_keeps_its_architecture(runs):
    base, tuned, _, _, _ = runs
    parent, child = load_model(base), load_model(tuned)
    assert child.arch == parent.arch and child.normalization == parent.normalization
    facts = child.metadata["parent"]
    assert facts["file"] == "base.pt"
    assert facts["epoch"] == parent.metadata["epoch"]
    assert facts["test_metrics"] == parent.metadata["metrics"]["test"]
    assert facts["trained_on"]["presets"] == parent.metadata["train_config"]["presets"]
    assert child.metadata["train_config"]["sources"] == {"simulation": 0.25, "files": 0.75}


def test_freeze_encoder_changes_only_the_decoder(runs):
    base, _, frozen, _, _ = runs
    before, after = load_model(base).net.state_dict(), load_model(frozen).net.state_dict()
    encoder = [key for key in before if key.startswith("encoder.")]
    others = [key for key in before if not key.startswith("encoder.")]
    assert encoder and others
    assert all(torch.equal(before[key], after[key]) for key in encoder)
    assert sum(not torch.equal(before[key], after[key]) for key in others) == len(others)


def test_distill_keeps_the_start_models_probabilities(runs):
    base, _, _, frames, kept = runs
    models = {name: load_model(path) for name, path in {"base": base, **kept}.items()}
    config = load_train_config(TINY, normalization=models["base"].normalization, **SMALL)
    x, _ = make_batch(zip(*(part[:8] for part in pasted_tiles(frames["CCD_C"], seed=98)), strict=True), config, None,
                      "cpu")
    with torch.no_grad():
        logits = {name: model.net.eval()(x) for name, model in models.items()}
    drift = {name: losses.distillation_loss(logits[name], logits["base"]).item() for name in kept}
    print(f"KL from the start model: {drift}")
    assert drift["distilled"] < 0.5 * drift["free"]


def test_distill_needs_a_start_model():
    with pytest.raises(ConfigError, match="distill"):
        load_train_config(TINY, distill=1.0)
