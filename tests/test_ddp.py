import os
import socket

import torch
import torch.multiprocessing as mp

from ccdseg.nn import train as training
from ccdseg.nn.model import build_model, load_model
from ccdseg.nn.train_config import load_train_config, output_paths

WORLD = 2


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _rank(rank, port, config, dump):
    """One torchrun-like rank; records its first batch and its weights at validation."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    make_batch, evaluate = training.make_batch, training.evaluate

    def recording_make_batch(tiles, config, rng, device):
        x, y = make_batch(tiles, config, rng, device)
        if rng is not None and not (dump / f"batch{rank}.pt").exists():
            torch.save(x, dump / f"batch{rank}.pt")
        return x, y

    def recording_evaluate(net, *args):
        if not (dump / f"weights{rank}.pt").exists():  # the validation after the (only) epoch
            torch.save(net.state_dict(), dump / f"weights{rank}.pt")
        return evaluate(net, *args)

    training.make_batch, training.evaluate = recording_make_batch, recording_evaluate
    training.train(config, progress=False)


def test_two_cpu_ranks_keep_identical_weights(tmp_path):
    config = load_train_config(overrides=[
        "arch.depth=2", "arch.base_width=4", "arch.max_width=8", "tile_size=32", "sim_size=64", "batch_size=2",
        "steps_per_epoch=4", "epochs=1", "val_tiles=2", "test_tiles=2", "weight_tiles=2", "num_threads=1",
        "device=cpu"], out=str(tmp_path / "ddp.pt"))
    mp.spawn(_rank, args=(_free_port(), config, tmp_path), nprocs=WORLD)

    first = [torch.load(tmp_path / f"batch{rank}.pt") for rank in range(WORLD)]
    # each rank draws its own tiles (seed + rank), yet the averaged gradients keep the weights equal
    assert not torch.equal(first[0], first[1])
    weights = [torch.load(tmp_path / f"weights{rank}.pt") for rank in range(WORLD)]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)
    # rank 0 wrote the model (the weights it validated, changed by training) and every other output
    saved = load_model(output_paths(config.out)["model"]).net.state_dict()
    torch.manual_seed(config.seed)
    initial = build_model(config.arch).state_dict()
    for name, value in weights[0].items():
        torch.testing.assert_close(saved[name], value, rtol=0, atol=0)
    assert any(not torch.equal(initial[name], value) for name, value in weights[0].items())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("ddp")) == sorted(
        p.name for p in output_paths(config.out).values())
