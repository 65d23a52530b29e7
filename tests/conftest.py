import pytest

from ccdseg.pipeline.demo import sample_path

#: The real DAMIC-M module-test image (4 RICE-compressed extensions), bundled with the package.
DAMICM_SAMPLE = sample_path()


@pytest.fixture
def damicm_sample():
    return DAMICM_SAMPLE


#: A U-Net small enough for tests to build and run in milliseconds.
TINY_ARCH = {"depth": 2, "base_width": 8, "max_width": 16}


def save_tiny_model(path, seed=1, sharpen=1.0, normalization=None):
    """Save a randomly initialised tiny model; ``sharpen`` scales the head so several classes appear."""
    import torch

    from ccdseg.nn.model import build_model, save_model

    torch.manual_seed(seed)
    net = build_model(TINY_ARCH)
    with torch.no_grad():
        net.head.weight *= sharpen
    save_model(path, net, TINY_ARCH, normalization)
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """Path of a randomly initialised tiny model file (no shipped model needed)."""
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny.pt")
