import numpy as np
import pytest
import torch

import ccdseg
from ccdseg.classes import NAMES
from ccdseg.errors import ConfigError, ModelFileError
from ccdseg.nn import model as model_module
from ccdseg.nn.model import (
    ARCHITECTURES,
    UNet,
    build_model,
    count_parameters,
    level_widths,
    load_model,
    resolve_arch,
    save_model,
)
from ccdseg.nn.normalize import DEFAULT_PARAMS


@pytest.fixture
def small_net():
    torch.manual_seed(0)
    return build_model({"depth": 2, "base_width": 4})


def test_thesis_preset_matches_the_thesis_network():
    arch = resolve_arch("thesis")
    assert level_widths(arch) == [32, 64, 128, 256, 512]
    assert (arch["depth"], arch["activation"], arch["dropout"], arch["upsample"]) == (4, "elu", 0.18, "transpose")
    net = build_model("thesis")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(m.kernel_size == (3, 3) for m in convs[:-1]) and convs[-1].kernel_size == (1, 1)
    assert len(convs) == 2 * 9 + 1
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules()) == 4
    assert count_parameters(net) == pytest.approx(7.76e6, rel=0.01)


def test_default_preset_is_small():
    assert level_widths("default") == [16, 32, 64, 64]
    assert count_parameters(build_model()) == 317_828


@pytest.mark.parametrize("arch", [
    "default",
    {"depth": 2, "base_width": 4, "norm": "batch", "upsample": "bilinear", "activation": "relu"},
    {"depth": 1, "base_width": 6, "norm": "group", "groups": 4, "width_multipliers": [1, 1.5], "dropout": 0.1},
])
def test_output_shape_for_multiples_of_the_pooling(arch):
    net = build_model(arch).eval()
    multiple = 2 ** net.depth
    x = torch.randn(2, 1, 3 * multiple, 5 * multiple)
    with torch.no_grad():
        assert net(x).shape == (2, 4, 3 * multiple, 5 * multiple)
    with pytest.raises(ValueError, match=f"multiples of {multiple}"):
        net(torch.randn(1, 1, 3 * multiple, 5 * multiple + multiple // 2))


def test_arch_errors_name_the_key():
    with pytest.raises(ConfigError, match="'widht'"):
        build_model({"widht": 3})
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        build_model("huge")
    with pytest.raises(ConfigError, match="dropout"):
        resolve_arch({"dropout": 1.5})
    with pytest.raises(ConfigError, match="width_multipliers"):
        resolve_arch({"depth": 2, "width_multipliers": [1, 2]})
    assert set(ARCHITECTURES) >= {"thesis", "default"}


def test_save_load_round_trip(tmp_path, small_net):
    path = tmp_path / "m.pt"
    arch = {"depth": 2, "base_width": 4}
    save_model(path, small_net, arch, {"asinh_scale": 2.0}, metrics={"iou": np.float32(0.5)},
               train_config={"epochs": 3, "lr": 1e-3}, parent=None)
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary left behind
    loaded = load_model(path)
    assert not loaded.net.training
    assert loaded.arch == resolve_arch(arch)
    assert loaded.normalization == {**DEFAULT_PARAMS, "asinh_scale": 2.0}
    assert loaded.classes == list(NAMES)
    assert loaded.metadata["metrics"] == {"iou": 0.5}
    assert loaded.metadata["train_config"]["epochs"] == 3
    assert loaded.metadata["package_version"] == ccdseg.__version__
    x = torch.randn(3, 1, 16, 24)
    small_net.eval()
    with torch.no_grad():
        assert torch.equal(loaded.net(x), small_net(x))


def test_damaged_or_foreign_files_raise_model_file_error(tmp_path, small_net):
    good = tmp_path / "good.pt"
    save_model(good, small_net, {"depth": 2, "base_width": 4}, None)
    data = good.read_bytes()
    cases = {
        "truncated.pt": data[: len(data) // 2],
        "flipped.pt": data[:200] + bytes(b ^ 0xFF for b in data[200:400]) + data[400:],
        "text.pt": b"pedestal = -38\n",
        "empty.pt": b"",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    torch.save({"format": "ccdseg-model", "format_version": 99}, tmp_path / "future.pt")
    payload = torch.load(good, weights_only=True)
    payload["arch"] = {"depth": 2, "base_width": 8}
    torch.save(payload, tmp_path / "mismatch.pt")
    reasons = {}
    for name in [*cases, "foreign.pt", "future.pt", "mismatch.pt", "missing.pt"]:
        with pytest.raises(ModelFileError) as info:
            load_model(tmp_path / name)
        assert str(tmp_path / name) in str(info.value) and "\n" not in str(info.value)
        reasons[name] = info.value.reason
    assert "not a ccdseg model" in reasons["foreign.pt"]
    assert "format_version 99" in reasons["future.pt"]
    assert "do not fit the architecture" in reasons["mismatch.pt"]
    assert reasons["missing.pt"] == "no such file"
    assert "corrupt, truncated" in reasons["truncated.pt"]
    assert "corrupt, truncated" in reasons["text.pt"]


def test_missing_shipped_model(monkeypatch):
    monkeypatch.setattr(model_module, "SHIPPED_MODEL", "data/no_such_model.pt")
    with pytest.raises(ModelFileError, match="no shipped model is installed"):
        load_model()


def test_save_rejects_reserved_or_unstorable_metadata(tmp_path, small_net):
    with pytest.raises(ConfigError, match="'format' is reserved"):
        save_model(tmp_path / "a.pt", small_net, "default", None, format="v2")
    with pytest.raises(ConfigError, match="'parent'"):
        save_model(tmp_path / "a.pt", small_net, "default", None, parent=object())
    assert not list(tmp_path.iterdir())


def test_dropout_only_in_training():
    net = UNet(depth=1, base_width=4, dropout=0.5)
    x = torch.randn(1, 1, 8, 8)
    net.train()
    assert not torch.equal(net(x), net(x))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_halfres_network_runs_at_half_resolution_between_full_resolution_stem_and_head(tmp_path):
    from ccdseg.nn.model import input_multiple

    arch = resolve_arch("halfres")
    assert input_multiple(arch) == 8 and input_multiple("default") == 8 and input_multiple("thesis") == 16
    torch.manual_seed(0)
    net = build_model("halfres").eval()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 8 and net.encoder[0][0].in_channels == 32  # 2x2 blocks of the 8-channel stem
    assert level_widths(arch) == [32, 64, 64]
    x = torch.randn(2, 1, 48, 40)
    with torch.inference_mode():
        logits = net(x)
        assert logits.shape == (2, len(NAMES), 48, 40)
        with pytest.raises(ValueError, match="multiples of 8"):
            net(torch.randn(1, 1, 44, 40))
    save_model(tmp_path / "h.pt", net, "halfres", None)
    loaded = load_model(tmp_path / "h.pt")
    assert loaded.arch == arch
    with torch.inference_mode():
        torch.testing.assert_close(loaded.net(x), logits)


def test_full_resolution_model_files_do_not_store_stem_width(tmp_path):
    # earlier ccdseg versions reject unknown architecture keys
    save_model(tmp_path / "d.pt", build_model("default"), "default", None)
    stored = torch.load(tmp_path / "d.pt", weights_only=True)["arch"]
    assert "stem_width" not in stored
    assert load_model(tmp_path / "d.pt").arch["stem_width"] == 0
