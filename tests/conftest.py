from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
DAMICM_SAMPLE = SHARED / "data" / "damicm_module_test.fz"


@pytest.fixture
def damicm_sample():
    """The real DAMIC-M module-test image (4 RICE-compressed extensions), from ../shared."""
    if not DAMICM_SAMPLE.exists():
        pytest.skip(f"{DAMICM_SAMPLE} not present")
    return DAMICM_SAMPLE
