import pytest
import torch

from ccdseg.cli import main
from ccdseg.errors import ConfigError
from ccdseg.nn.average import average_models
from ccdseg.nn.model import build_model, load_model, save_model
from conftest import save_tiny_model


@pytest.fixture()
def models(tmp_path):
    return [save_tiny_model(tmp_path / f"m{seed}.pt", seed=seed) for seed in (1, 2, 3)]


def test_average_is_the_weighted_mean_of_start_and_fine_tunes(models, tmp_path):
    start, first, second = models
    out = average_models(start, [first, second], weight=0.3, out=tmp_path / "avg.pt")
    averaged = load_model(out)
    states = [load_model(path).net.state_dict() for path in models]
    for key, value in averaged.net.state_dict().items():
        expected = 0.7 * states[0][key] + 0.3 * (states[1][key] + states[2][key]) / 2
        torch.testing.assert_close(value, expected, rtol=0, atol=1e-6)
    assert averaged.metadata["averaged"]["weight"] == 0.3
    assert [facts["file"] for facts in averaged.metadata["averaged"]["finetuned"]] == ["m2.pt", "m3.pt"]
    assert averaged.metadata["parent"]["file"] == "m1.pt"
    # the whole way to a single fine-tune is that fine-tune
    alone = load_model(average_models(start, [first], weight=1.0, out=tmp_path / "one.pt")).net.state_dict()
    assert all(torch.equal(alone[key], states[1][key]) for key in alone)


def test_average_refuses_bad_weights_and_other_architectures(models, tmp_path):
    with pytest.raises(ConfigError, match="weight must be in"):
        average_models(models[0], models[1:], weight=0.0, out=tmp_path / "a.pt")
    with pytest.raises(ConfigError, match="at least one"):
        average_models(models[0], [], weight=0.5, out=tmp_path / "a.pt")
    other = tmp_path / "other.pt"
    arch = {"depth": 2, "base_width": 4, "max_width": 8}
    save_model(other, build_model(arch), arch, None)
    with pytest.raises(ConfigError, match="not a fine-tune"):
        average_models(models[0], [other], weight=0.5, out=tmp_path / "a.pt")
    assert not (tmp_path / "a.pt").exists()


def test_average_command(models, tmp_path, capsys):
    out = tmp_path / "cli.pt"
    assert main(["average", str(models[0]), str(models[1]), "--weight", "0.5", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out and load_model(out).metadata["averaged"]["weight"] == 0.5
    assert main(["average", str(models[0]), str(models[1]), "--weight", "2", "--out", str(out)]) == 2
    assert "weight must be in (0, 1]" in capsys.readouterr().err
