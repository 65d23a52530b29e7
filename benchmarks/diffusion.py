"""``calibrate-diffusion`` end to end: the diffusion law recovered from simulated frames through the network.

    python benchmarks/diffusion.py [--frames 10] [--write]

Per preset: ``--frames`` simulated 512 x 512 frames with 60 muons per Mpix (few other events, no glow),
written as FITS with their GAIN, go through :func:`ccdseg.pipeline.diffusion.calibrate_diffusion` (the
shipped network, the object step, the kind classifier, the width profiles of the through-going muons);
the fitted A and b are compared with the preset's law. ``--write`` saves the table to
``benchmarks/results/diffusion.md``.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

from astropy.io import fits

from ccdseg.pipeline.diffusion import calibrate_diffusion
from ccdseg.sim.benchmark import BENCHMARK_PRESETS
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import iter_simulations
from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)

RESULTS = Path(__file__).resolve().parent / "results" / "diffusion.md"
OVERRIDES = {"detector.height": 512, "detector.width": 512, "clusters.muons_per_mpix": (60.0, 60.0),
             "clusters.points_per_mpix": (10.0, 10.0), "clusters.worms_per_mpix": (0.0, 0.0),
             "glow.probability": 0.0}


def measure(preset, frames, tmp):
    """The fit of ``calibrate_diffusion`` and the true law of ``preset``."""
    config = load_config(preset, overrides=OVERRIDES)
    paths = []
    for number, (sim, _) in enumerate(zip(iter_simulations(config, seed=0), range(frames), strict=False)):
        path = Path(tmp) / f"{preset}_{number}.fits"
        fits.PrimaryHDU(sim.image, header=fits.Header({"GAIN": config.detector.gain_adu_per_e})).writeto(path)
        paths.append(path)
    return calibrate_diffusion(paths), config.clusters.diffusion_a_um2, config.clusters.diffusion_b_per_um


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    start = time.time()
    lines = ["| preset | tracks | A fitted (um²) | A true | A error | b fitted (1/um) | b true | b error |",
             "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for preset in BENCHMARK_PRESETS:
            fit, a, b = measure(preset, args.frames, tmp)
            lines.append(f"| {preset} | {fit['n_tracks']} | {fit['a_um2']:.0f} +- {fit['a_err_um2']:.0f} | {a:.1f} | "
                         f"{fit['a_um2'] / a - 1:+.1%} | {fit['b_per_um']:.3g} +- {fit['b_err_per_um']:.2g} | "
                         f"{b:.3g} | {fit['b_per_um'] / b - 1:+.1%} |")
            print(lines[-1], flush=True)
    text = "\n".join(lines)
    if args.write:
        RESULTS.write_text("# calibrate-diffusion on simulated frames\n\n"
                           f"`python benchmarks/diffusion.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
                           f" with the shipped model; {describe()}; {time.time() - start:.0f} s.\n\n{text}\n")


if __name__ == "__main__":
    main()
