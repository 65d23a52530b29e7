"""Simulator fidelity: a real skipper frame against simulated frames, measured with the same code.

    python benchmarks/fidelity.py [--real FRAME] [--preset damicm | --config FITTED.toml] [--n 8] [--seed 1] [--write]

Every image HDU of the real frame (default the bundled DAMIC-M module test, 4 CCDs of 320 x 640)
and ``--n`` simulated frames of the same size (seeds: one stream from ``--seed``) go through
:func:`ccdseg.measure.frame_stats.measure_frame`: gain from the electron peak spacing, 0 e- peak
width, occupancy, dark level and ramps, clusters (pixels >= 3 e-, 8 neighbours) with their charge,
size and pixel-integrated Gaussian width. The table gives the real mean over CCDs (and their range),
the simulated mean +- standard deviation over frames, the relative difference and, for the issue's
targets, whether it is met. The KS distances compare the pooled distributions; the yardstick is the
median KS distance between two real CCDs. ``--write`` saves the tables to ``benchmarks/results/fidelity.md``
(with ``--config``: ``fidelity_like.md``).
"""

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats

from ccdseg.io import read_images
from ccdseg.measure.frame_stats import measure_frame
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import iter_simulations
from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "fidelity.md"
RESULTS_CONFIG = HERE / "results" / "fidelity_like.md"  # with --config: the parameters of simulate --like
DEFAULT_REAL = HERE.parent / "src" / "ccdseg" / "data" / "damicm_module_test.fz"
SIZE_BINS_E = ((50, 200), (200, 1000), (1000, 3000), (3000, 20000))


def _median_size(s, low, high):
    c = s.clusters
    pick = (c["charge_e"] >= low) & (c["charge_e"] < high)
    return float(np.median(c["npix"][pick])) if pick.any() else np.nan


#: Row name -> (value of one frame's FrameStats, relative target of the issue or None).
QUANTITIES = {
    "gain (ADU/e-)": (lambda s: s.gain, None),
    "0 e- peak width (e-)": (lambda s: s.noise_e, 0.20),
    "share of pixels at 0 e-": (lambda s: s.occupancy[0], None),
    "share at 1 e-": (lambda s: s.occupancy[1], None),
    "share at 2 e-": (lambda s: s.occupancy[2], None),
    "share at >= 3 e-": (lambda s: s.occupancy[3], None),
    "mean dark (e-/pix)": (lambda s: s.dark["level"], 0.25),
    "dark ramp (e-/pix per 100 rows)": (lambda s: s.dark["per_100_rows"], None),
    "dark across the columns (e-/pix)": (lambda s: s.dark["across_columns"], None),
    "dark at row 0, straight-line fit (e-/pix)": (lambda s: s.dark["first_row"], None),
    "column 0 excess (e-)": (lambda s: s.first_column_e, None),
    "row-to-row baseline wander (e-)": (lambda s: s.row_baseline_std_e, None),
    "clusters Q >= 1000 e- per Mpix": (lambda s: s.rate_per_mpix(1000.0), 0.30),
    "clusters Q >= 50 e- per Mpix": (lambda s: s.rate_per_mpix(50.0), None),
    "median cluster size, Q >= 50 e- (px)": (lambda s: _median_size(s, 50, np.inf), 0.25),
    **{f"median size, {lo}-{hi} e- (px)": ((lambda s, lo=lo, hi=hi: _median_size(s, lo, hi)), None)
       for lo, hi in SIZE_BINS_E},
    "median charge, Q >= 50 e- (e-)": (lambda s: float(np.median(s.clusters["charge_e"][s.clusters["charge_e"] >= 50])),
                                       None),
    "point-like sigma, median (px)": (lambda s: float(np.median(s.point_sigmas())), 0.10),
    "55Fe-window point-like sigma, median (px)": (lambda s: float(np.median(DISTRIBUTIONS["55Fe-window sigma"](s))),
                                                  None),
    "point-like share of fitted clusters": (lambda s: float(np.mean(s.clusters["point_like"][
        np.isfinite(s.clusters["sigma"])])), None),
    "55Fe share (1400-1800 e- of Q >= 100 e-)": (lambda s: s.fe55_share(), 0.30),
    "one-row streaks >= 3 px, >= 20 e- per Mpix": (lambda s: s.streaks_per_mpix(), None),
    "isolated pixels 10-100 e- per Mpix": (lambda s: s.isolated_per_mpix(), None),
    "brightest pixel (e-)": (lambda s: s.max_pixel_e, None),
}

#: Distribution name -> values of one frame's FrameStats.
DISTRIBUTIONS = {
    "cluster charge, Q >= 50 e-": lambda s: np.asarray(s.clusters["charge_e"][s.clusters["charge_e"] >= 50]),
    "cluster size, Q >= 50 e-": lambda s: np.asarray(s.clusters["npix"][s.clusters["charge_e"] >= 50]),
    "point-like sigma": lambda s: s.point_sigmas(),
    "55Fe-window sigma": lambda s: np.asarray(s.clusters["sigma"][s.clusters["point_like"]
                                                                  & (s.clusters["charge_e"] >= 1400)
                                                                  & (s.clusters["charge_e"] <= 1800)]),
}


def measure_real(path):
    images = read_images(path)
    return [im.label for im in images], [measure_frame(im.data) for im in images]


def measure_simulated(config, n, seed):
    return [measure_frame(sim.image) for sim in itertools.islice(iter_simulations(config, seed), n)]


def quantity_table(real, sim):
    rows = ["| quantity | real: mean (range over CCDs) | simulated: mean ± sd | sim / real − 1 | target | met |",
            "|---|---|---|---|---|---|"]
    met = {}
    for name, (value, target) in QUANTITIES.items():
        r = np.array([value(s) for s in real], dtype=float)
        m = np.array([value(s) for s in sim], dtype=float)
        real_mean, sim_mean = np.nanmean(r), np.nanmean(m)
        rel = sim_mean / real_mean - 1 if real_mean != 0 else np.nan
        ok = "" if target is None else ("yes" if abs(rel) <= target else "no")
        if target is not None:
            met[name] = ok == "yes"
        rows.append(f"| {name} | {_fmt(real_mean)} ({_fmt(np.nanmin(r))} – {_fmt(np.nanmax(r))}) | "
                    f"{_fmt(sim_mean)} ± {_fmt(np.nanstd(m))} | {rel:+.1%} | "
                    f"{'' if target is None else f'±{target:.0%}'} | {ok} |")
    return rows, met


def ks_table(real, sim):
    rows = ["| distribution | KS real vs sim | KS between real CCDs (median of pairs) | ratio | ≤ 2× |",
            "|---|---|---|---|---|"]
    met = {}
    for name, values in DISTRIBUTIONS.items():
        per_ccd = [values(s) for s in real]
        yardstick = float(np.median([stats.ks_2samp(a, b).statistic
                                     for a, b in itertools.combinations(per_ccd, 2)]))
        distance = stats.ks_2samp(np.concatenate(per_ccd), np.concatenate([values(s) for s in sim])).statistic
        met[name] = distance <= 2 * yardstick
        rows.append(f"| {name} | {distance:.3f} | {yardstick:.3f} | {distance / yardstick:.1f} | "
                    f"{'yes' if met[name] else 'no'} |")
    return rows, met


def _fmt(value):
    if not np.isfinite(value):
        return "–"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:.0f}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="real skipper frame (every image HDU)")
    parser.add_argument("--preset", default="damicm", help="simulation preset (default damicm)")
    parser.add_argument("--config", type=Path, help="TOML config instead of the preset (e.g. from simulate --like)")
    parser.add_argument("--n", type=int, default=8, help="simulated frames (default 8)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated frames (default 1)")
    parser.add_argument("--write", action="store_true",
                        help=f"also write {RESULTS.relative_to(HERE.parent)} (with --config: {RESULTS_CONFIG.name})")
    args = parser.parse_args(argv)

    start = time.time()
    names, real = measure_real(args.real)
    height, width = real[0].shape
    config = load_config(args.preset, args.config, [f"detector.height={height}", f"detector.width={width}"])
    sim = measure_simulated(config, args.n, args.seed)
    quantity_rows, met = quantity_table(real, sim)
    ks_rows, ks_met = ks_table(real, sim)
    source = f"--config {args.config}" if args.config else f"--preset {args.preset}"
    summary = (f"Targets met: {sum(met.values())} of {len(met)} (relative), {sum(ks_met.values())} of "
               f"{len(ks_met)} (KS ≤ 2× the real CCD-to-CCD distance).")
    text = "\n".join([
        f"Real: `{args.real.name}` ({', '.join(names)}; {height} × {width}). Simulated: {source}, {args.n} frames "
        f"of {height} × {width}, seed {args.seed}.", "", *quantity_rows, "", *ks_rows, "", summary])
    print(text)
    print(f"({time.time() - start:.0f} s)", file=sys.stderr)
    if args.write:
        command = "python benchmarks/fidelity.py " + " ".join(argv if argv is not None else sys.argv[1:])
        results = RESULTS_CONFIG if args.config else RESULTS
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(
            "# Simulator fidelity\n\n"
            f"`{command.strip()}` on {describe()}, "
            f"{time.time() - start:.0f} s.\n\n{text}\n")


if __name__ == "__main__":
    main()
