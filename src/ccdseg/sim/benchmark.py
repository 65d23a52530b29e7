"""The fixed, seeded benchmark set: simulated images of every preset with their truth."""

import json
import zlib
from pathlib import Path

from ccdseg._version import __version__
from ccdseg.errors import ConfigError
from ccdseg.io.atomic import write_text_atomic
from ccdseg.sim.config import load_config

BENCHMARK_PRESETS = ("damic", "skipper", "damicm", "thesis")
BENCHMARK_N = 8
BENCHMARK_SIZE = (512, 512)
BENCHMARK_SEED = 20240501
#: File describing a benchmark set (presets, n, size, seed, package version).
BENCHMARK_MANIFEST = "benchmark.json"


def make_benchmark_set(out_dir, presets=BENCHMARK_PRESETS, n=BENCHMARK_N, size=BENCHMARK_SIZE,
                       seed=BENCHMARK_SEED, overwrite=False):
    """Write the fixed, seeded benchmark set: ``out_dir/PRESET/sim_00000.fits`` (+ ``_truth.fits``) ...

    Image i of a preset depends only on (``seed``, preset name, i), so adding a preset or
    images leaves the others unchanged. ``out_dir/benchmark.json`` records the parameters.

    Parameters
    ----------
    out_dir : str or Path
        Root directory of the set (created if missing).
    presets : sequence of str
        Simulation presets (see :func:`ccdseg.sim.config.load_config`).
    n : int
        Images per preset.
    size : (int, int)
        Image height and width (px).
    seed : int
        Seed of the whole set.
    overwrite : bool
        Replace existing files.

    Returns
    -------
    dict of str -> list of Path
        Image files of each preset.

    Raises
    ------
    ConfigError
        On an unknown preset or a non-positive ``n`` or size.
    OutputError
        If a file exists and ``overwrite`` is false.
    """
    from ccdseg.sim.simulate import iter_simulations  # numpy and astropy only when a set is written
    from ccdseg.sim.truth import write_simulation

    if n < 1 or min(size) < 1:
        raise ConfigError(f"benchmark: n = {n} and size = {tuple(size)} must be positive")
    out_dir = Path(out_dir)
    files = {}
    for preset in presets:
        config = load_config(preset, overrides=[f"detector.height={size[0]}", f"detector.width={size[1]}"])
        stream = iter_simulations(config, seed=[seed, zlib.crc32(preset.encode())])
        files[preset] = []
        for index in range(n):
            path = out_dir / preset / f"sim_{index:05d}.fits"
            keys = {"PRESET": preset, "SEED": seed, "SIMINDEX": index}
            write_simulation(next(stream), path, keys=keys, overwrite=overwrite)
            files[preset].append(path)
    manifest = {"presets": list(presets), "n": n, "size": list(size), "seed": seed,
                "ccdseg_version": __version__}
    write_text_atomic(out_dir / BENCHMARK_MANIFEST, json.dumps(manifest, indent=2) + "\n", overwrite=True)
    return files
