"""Dark-matter search products measured: dark charge, run masks, low-energy events, the DAMIC-M sample.

    python benchmarks/search_products.py [--frames 20] [--size 256] [--write]

1. Simulated skipper runs (preset ``skipper``, 0.12 e- noise) of ``--frames`` frames each, one run per
   dark charge 0.001, 0.01, 0.1 and 1 e-/pix (``detector.dark_charge_e``; no readout ramp, no
   glow, point deposits from 7 eV so that 2-4 e- events occur), with the same defects in every
   frame (:func:`ccdseg.sim.run.simulate_run`). Every frame is segmented by the shipped model and
   goes through :func:`ccdseg.measure.summary.search_products`; the run mask comes from
   :func:`ccdseg.measure.run_mask.defect_map` of the run's frames.

   - dark: share of frames whose ``dark_e`` is within 1 and 2 quoted errors (``dark_e_err``) of the truth,
     and whose 90 % interval (``dark_e_lo`` ... ``dark_e_hi``) holds the truth;
   - run mask: share of the defect pixels in it, and share of the events whose centroid pixel is a
     run-mask pixel that is no defect (events taken for defects);
   - low-energy events: share of the simulated events of 2-4 e- (charge rounded) with all their
     pixels exposed that a low-energy event covers.
2. The bundled DAMIC-M frame through ``process_file`` (shipped model): one MASK per CCD, and
   ``dark_e`` against an independent measurement, the 0 e- peak: ``-ln(n_0 / n)`` of the exposed
   pixels in 32-row bands (the dark charge grows with the row), pixel-weighted; the whole-frame
   0 e- peak of all pixels is listed too.

``--write`` saves the tables to ``benchmarks/results/search_products.md``.
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from ccdseg.calib.electrons import to_electrons
from ccdseg.infer.predict import get_model, segment
from ccdseg.measure.catalog import find_clusters
from ccdseg.measure.run_mask import defect_map
from ccdseg.measure.summary import search_products
from ccdseg.pipeline.demo import sample_path
from ccdseg.pipeline.job import process_file
from ccdseg.sim.config import load_config
from ccdseg.sim.run import simulate_run
from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)

RESULTS = Path(__file__).resolve().parent / "results" / "search_products.md"
DARKS = (1e-3, 1e-2, 0.1, 1.0)
BAND_ROWS = 32


def run_config(dark, size):
    """The skipper preset at a constant dark charge, without glow, with deposits from 7 eV."""
    return load_config("skipper", overrides={
        "detector.height": size, "detector.width": size, "detector.dark_current_e_per_day": 0.0,
        "detector.dark_charge_e": [dark, dark], "detector.spurious_charge_e": 0.0, "glow.probability": 0.0,
        "clusters.point_energy_ev": [7.0, 20000.0]})


def measure_run(dark, n_frames, size, model, seed):
    """Dark coverage, run-mask and low-energy numbers of one simulated run."""
    config = run_config(dark, size)
    gain = config.detector.gain_adu_per_e
    frames = simulate_run(config, n_frames, seed=seed)
    defects = frames[0].charge["hot_expected"] > 0
    run_mask = defect_map([to_electrons(frame.image, gain) for frame in frames]) > 0
    pulls, inside, eligible, found, events, false_defect = [], [], 0, 0, 0, 0
    for number, frame in enumerate(frames):
        labels, _ = segment(frame.image, model=model, tile_size=size, return_probabilities=False)
        products = search_products(frame.image, labels, find_clusters(frame.image, labels, gain=gain), gain=gain,
                                   seed=number)
        truth = float(np.mean(frame.charge["dark_expected"][products.mask == 0]))
        pulls.append((products.summary["dark_e"] - truth) / products.summary["dark_e_err"])
        inside.append(products.summary["dark_e_lo"] <= truth <= products.summary["dark_e_hi"])
        low_energy = products.catalog[products.catalog["low_energy"]]
        covered = np.zeros(frame.image.shape, bool)
        for row in low_energy:
            covered[row["ymin"]:row["ymax"] + 1, row["xmin"]:row["xmax"] + 1] = True
        rounded = np.round(frame.charge["cluster"])
        for event in frame.truth[frame.truth["npix"] > 0]:
            pixels = frame.ids == event["id"]
            centre = (min(int(round(event["y"])), size - 1), min(int(round(event["x"])), size - 1))
            events += 1
            false_defect += bool(run_mask[centre] and not defects[centre])
            if 2 <= rounded[pixels].sum() <= 4 and np.all(products.mask[pixels] == 0):
                eligible += 1
                found += bool(covered[pixels].any())
    pulls = np.abs(pulls)
    return {"dark": dark, "frames": n_frames, "within_1": np.mean(pulls < 1), "within_90": np.mean(inside),
            "within_2": np.mean(pulls < 2), "defect_px": int(defects.sum()),
            "defects_held": float(np.mean(run_mask[defects])), "events": events,
            "events_as_defects": false_defect / max(events, 1), "low_energy_events": eligible,
            "efficiency": found / eligible if eligible else np.nan}


def zero_peak_dark(electrons, exposed):
    """Independent dark charge: ``-ln`` of the 0 e- share of the exposed pixels in row bands, pixel-weighted."""
    darks, weights = [], []
    for start in range(0, electrons.shape[0], BAND_ROWS):
        values = electrons[start:start + BAND_ROWS][exposed[start:start + BAND_ROWS]]
        if values.size:
            darks.append(-np.log(np.mean(np.abs(values) < 0.5)))
            weights.append(values.size)
    return float(np.average(darks, weights=weights))


def measure_sample(model):
    """dark_e of the DAMIC-M sample's CCDs against the 0 e- peak of the same exposed pixels."""
    rows = []
    with tempfile.TemporaryDirectory() as out:
        result = process_file(sample_path(), out, model=model)
        with fits.open(Path(out) / "damicm_module_test_seg.fits") as hdul:
            summary = Table(hdul["SUMMARY"].data)
            masks = {hdu.name: hdu.data for hdu in hdul if hdu.name.startswith("MASK_")}
    with fits.open(sample_path()) as hdul:
        images = {hdu.name: hdu.data.astype(np.float64) for hdu in hdul[1:]}
    for image, row in zip(result.images, summary, strict=True):
        electrons, _ = to_electrons(images[image.hdu], row["gain"])
        exposed = masks[f"MASK_{image.hdu}"] == 0
        independent = zero_peak_dark(electrons, exposed)
        whole = -np.log(np.mean(np.abs(electrons[:, 1:]) < 0.5))
        rows.append({"hdu": image.hdu, "mask": f"MASK_{image.hdu}" in masks, "masked": row["masked_fraction"],
                     "dark_e": row["dark_e"], "dark_e_err": row["dark_e_err"], "zero_peak": independent,
                     "ratio": row["dark_e"] / independent, "zero_peak_all": whole,
                     "per_day": row["dark_e_per_day"], "low_energy": row["n_low_energy"],
                     "low_energy_dark": row["n_low_energy_dark"]})
    return rows


def tables(runs, sample, n_frames, size, seconds):
    """The results as markdown."""
    lines = [f"Simulated skipper runs: {n_frames} frames of {size} x {size} px per dark charge, fixed defects, "
             "shipped model.", "",
             "| dark (e-/pix) | frames within 1 sigma / 90 % interval / 2 sigma | defect px | run mask holds | "
             "events | events taken for defects | 2-4 e- events exposed | found |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        lines.append(f"| {r['dark']:g} | {r['within_1']:.2f} / {r['within_90']:.2f} / {r['within_2']:.2f} | "
                     f"{r['defect_px']} | {100 * r['defects_held']:.1f} % | {r['events']} | "
                     f"{100 * r['events_as_defects']:.3f} % | {r['low_energy_events']} | {r['efficiency']:.2f} |")
    lines += ["", "Bundled DAMIC-M frame (shipped model):", "",
              "| CCD | MASK | masked | dark_e (e-/pix) | 0 e- peak, exposed (e-/pix) | dark_e / 0 e- peak | "
              "0 e- peak, all pixels | e-/pix/day | 2-4 e- events | expected from dark |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sample:
        lines.append(f"| {r['hdu']} | {'yes' if r['mask'] else 'no'} | {100 * r['masked']:.1f} % | "
                     f"{r['dark_e']:.4f} +- {r['dark_e_err']:.4f} | {r['zero_peak']:.4f} | {r['ratio']:.3f} | "
                     f"{r['zero_peak_all']:.3f} | {r['per_day']:.1f} | {r['low_energy']} | "
                     f"{r['low_energy_dark']:.0f} |")
    lines += ["", f"{seconds:.0f} s wall time on {describe()}.",
              "Command: `python benchmarks/search_products.py --write`"]
    return "\n".join(lines) + "\n"


def main():
    """Run the measurements, print the tables, and save them with ``--write``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames per simulated run (20)")
    parser.add_argument("--size", type=int, default=256, help="side of the simulated frames in px (256)")
    parser.add_argument("--seed", type=int, default=18, help="seed of the runs (18)")
    parser.add_argument("--write", action="store_true", help=f"save the tables to {RESULTS}")
    args = parser.parse_args()
    start = time.time()
    model = get_model(None)
    runs = [measure_run(dark, args.frames, args.size, model, args.seed + i) for i, dark in enumerate(DARKS)]
    text = tables(runs, measure_sample(model), args.frames, args.size, time.time() - start)
    print(text)
    if args.write:
        RESULTS.write_text("# Search products\n\n" + text)


if __name__ == "__main__":
    main()
