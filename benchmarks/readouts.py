"""The shipped model on real readouts: several amplifiers in one image, baselines along the row, stand-ins.

    python benchmarks/readouts.py [--write | --model MODEL.pt]

Runs the file pipeline (``process_file``, default options: ``amplifiers="auto"``) and prints one table:

(a) Self-tests of the amplifier segments. The bundled DAMIC-M sample's four CCDs stitched into one
    2 x 2 image [[A, B], [D, C]] with pedestals offset by -400, 0, +300, +700 ADU and no header keys,
    against the four CCDs segmented as their own HDUs: the share of pixels with equal labels. The same
    for one simulated 2 x 2-amplifier frame per preset (each amplifier its own pedestal, noise, gain and
    outward readout corner) against its four quadrants as HDUs.
(b) Frames of every preset with a baseline along the row (a saw-tooth of 3-8 noise sigma jumping every
    60-200 columns and decaying over 20-80 columns, plus 1-3 lasting steps of 2-5 sigma) against the same
    frames without: pixel F1 of the glowing and cluster classes; and the share of pixels called glowing on
    glow-free frames with the baseline. And on real data: the bundled sample's CCDs with a saw-tooth of
    0.4-1 e- (every 60-200 columns, decaying over 20-80) added, against the CCDs as they are: the share of
    equal labels of the worst CCD.
(c) Stand-ins for the real frames of issue 14, simulated with exact truth: a conventional 4-amplifier
    dark frame (1040 x 2152, uint16, quadrant pedestals 3371-3767 ADU, noise 3 ADU, ~60 events, no
    section keys) and an LTA-like skipper file (4 HDUs of 40 x 5000, 8 prescan columns named by CCDNPRES,
    gain 250 ADU/e-, a saw-tooth baseline every 150-350 columns, 1-2 saturated columns per HDU, ~30
    events in all): the share of pixels called glowing, the share of events found (any pixel labelled
    cluster) and the false clusters (cluster components touching no event) above 4 e-; groups of 1-4 dark
    electrons called cluster in the skipper frame are counted apart (a single frame cannot tell them from
    2-4 e- events: the search products list them as low-energy candidates).

``--write`` saves the table to ``benchmarks/results/readouts.md``; ``--model`` measures another model file
(a retrain) instead of the shipped one.
"""

import argparse
import tempfile
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

from ccdseg.classes import CLUSTER, GLOWING
from ccdseg.measure.low_energy import LOW_ENERGY_MAX_E
from ccdseg.metrics import class_scores, confusion_matrix
from ccdseg.pipeline.job import process_file
from ccdseg.sim.config import load_config
from ccdseg.sim.readout import sawtooth
from ccdseg.sim.simulate import simulate_image
from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "readouts.md"
SAMPLE = HERE.parent / "src" / "ccdseg" / "data" / "damicm_module_test.fz"
PRESETS = ("damic", "skipper", "damicm", "thesis")
#: ADU per electron of the saw-tooth added to the sample, within 4 % of each CCD's gain.
SAMPLE_GAIN = 1.35
OFFSETS = {"CCD_A": -400.0, "CCD_B": 0.0, "CCD_D": 300.0, "CCD_C": 700.0}
#: Frames per preset of part (b) and their size.
N_BASELINE, SIZE = 6, (256, 512)


def labels_of(path, out_dir, names=None, *, model=None):
    """Labels of every image HDU of ``path`` by the pipeline (``model``: None for the shipped one)."""
    process_file(path, out_dir, model=model, overwrite=True)
    seg = Path(out_dir) / (Path(path).name.split(".")[0] + "_seg.fits")
    with fits.open(seg) as hdus:
        if names is None:
            return hdus["LABELS"].data
        return {name: hdus[f"LABELS_{name}"].data for name in names}


def write(path, images, header=None):
    """One HDU (primary) or several named ones."""
    if isinstance(images, dict):
        hdus = [fits.PrimaryHDU()] + [fits.ImageHDU(data, header=header, name=name) for name, data in images.items()]
        fits.HDUList(hdus).writeto(path, overwrite=True)
    else:
        fits.PrimaryHDU(images, header=header).writeto(path, overwrite=True)
    return path


def quadrants(image):
    h, w = image.shape[0] // 2, image.shape[1] // 2
    return {"Q1": image[:h, :w], "Q2": image[:h, w:], "Q3": image[h:, :w], "Q4": image[h:, w:]}


def stitch(parts):
    return np.vstack([np.hstack([parts[0], parts[1]]), np.hstack([parts[2], parts[3]])])


def self_tests(tmp, model=None):
    """(a): share of equal labels, whole image against its parts as HDUs."""
    rows = []
    with fits.open(SAMPLE) as hdus:
        ccds = {hdu.name: hdu.data.astype(np.float32) for hdu in hdus[1:]}
    stitched = write(tmp / "stitched.fits", stitch([ccds[n] + OFFSETS[n] for n in OFFSETS]))
    whole = labels_of(stitched, tmp, model=model)
    parts = labels_of(SAMPLE, tmp, list(OFFSETS), model=model)
    rows.append(("(a) sample CCDs stitched 2x2, offsets -400/0/+300/+700 ADU", "equal labels",
                 np.mean(whole == stitch([parts[n] for n in OFFSETS])), ">= 0.995"))
    for preset in PRESETS:
        config = load_config(preset, overrides={"detector.height": SIZE[0], "detector.width": SIZE[1],
                                                "readout.amplifier_cols": 2, "readout.amplifier_rows": 2})
        image = simulate_image(config, seed=11).image
        whole = labels_of(write(tmp / f"amps_{preset}.fits", image), tmp, model=model)
        parts = labels_of(write(tmp / f"quads_{preset}.fits", quadrants(image)), tmp, ["Q1", "Q2", "Q3", "Q4"],
                          model=model)
        rows.append((f"(a) {preset}: 2x2 amplifiers in one image", "equal labels",
                     np.mean(whole == stitch(list(parts.values()))), ">= 0.995"))
    return rows


def baseline_config(preset, sawtooth, glow=True):
    """The preset at SIZE, with (``sawtooth``) or without a baseline along the row (in noise sigma)."""
    noise = load_config(preset).detector.noise_e
    overrides = {"detector.height": SIZE[0], "detector.width": SIZE[1]}
    if sawtooth:
        overrides |= {"readout.sawtooth_e": [3 * noise, 8 * noise], "readout.sawtooth_period_px": [60, 200],
                      "readout.sawtooth_decay_px": [20.0, 80.0], "readout.baseline_jumps": [1, 3],
                      "readout.jump_e": [2 * noise, 5 * noise]}
    if not glow:
        overrides["glow.probability"] = 0.0
    return load_config(preset, overrides=overrides)


def baseline_tests(tmp, model=None):
    """(b): glowing and cluster F1 with and without the baseline; glowing share on glow-free frames."""
    rows = []
    for preset in PRESETS:
        confusion = {True: 0, False: 0}
        glowing = []
        for seed in range(N_BASELINE):
            for with_baseline in (True, False):
                # the baseline is drawn after everything else: the same seed gives the same charge and labels
                sim = simulate_image(baseline_config(preset, with_baseline), seed=seed)
                labels = labels_of(write(tmp / f"b_{preset}_{seed}_{with_baseline}.fits", sim.image), tmp, model=model)
                confusion[with_baseline] = confusion[with_baseline] + confusion_matrix(sim.labels, labels)
            sim = simulate_image(baseline_config(preset, True, glow=False), seed=100 + seed)
            labels = labels_of(write(tmp / f"g_{preset}_{seed}.fits", sim.image), tmp, model=model)
            glowing.append(np.mean(labels == GLOWING))
        scores = {key: class_scores(value) for key, value in confusion.items()}
        for name, cls in (("glowing", GLOWING), ("cluster", CLUSTER)):
            with_, without = scores[True]["f1"][cls], scores[False]["f1"][cls]
            rows.append((f"(b) {preset}: {name} F1 with / without baseline", f"{with_:.3f} / {without:.3f}",
                         with_ - without, ">= -0.02"))
        rows.append((f"(b) {preset}: glow-free frames with baseline", "glowing share", max(glowing), "<= 0.005"))
    return rows


def sample_sawtooth_test(tmp, seed=5, model=None):
    """(b) on real data: the sample's CCDs with a saw-tooth added along the row, against the CCDs as they are."""
    rng = np.random.default_rng(seed)
    with fits.open(SAMPLE) as hdus:
        ccds = {hdu.name: hdu.data.astype(np.float32) for hdu in hdus[1:]}
    sawed = {}
    for name, image in ccds.items():
        baseline = sawtooth(image.shape[1], rng, amplitude_e=(0.4, 1.0), period_px=(60, 200), decay_px=(20.0, 80.0))
        sawed[name] = image + np.float32(SAMPLE_GAIN) * baseline[None, :].astype(np.float32)
    plain = labels_of(SAMPLE, tmp, list(ccds), model=model)
    labelled = labels_of(write(tmp / "sample_sawtooth.fits", sawed), tmp, list(ccds), model=model)
    agree = min(np.mean(plain[name] == labelled[name]) for name in ccds)
    return [("(b) sample CCDs with a saw-tooth of 0.4-1 e- added", "equal labels, worst CCD", agree, ">= 0.995")]


def event_scores(sim, labels):
    """(events found, events, false clusters above 4 e-, false clusters of at most 4 e-) of one image.

    A false cluster touches no event. One of at most 4 e- in a frame that resolves electrons is a group of
    dark-charge electrons: the search's low-energy candidates (``ccdseg.measure.low_energy``), which no single
    frame tells from a 2-4 e- event; they are counted apart.
    """
    events = np.unique(sim.ids[sim.ids > 0])
    found = np.unique(sim.ids[(labels == CLUSTER) & (sim.ids > 0)])
    components, n = ndimage.label(labels == CLUSTER, structure=np.ones((3, 3)))
    touching = np.unique(components[(components > 0) & (sim.ids > 0)])
    charge = sum(sim.charge[name] for name in ("dark", "hot", "glow", "cluster"))
    totals = ndimage.sum_labels(charge, components, np.arange(1, n + 1))
    false = np.setdiff1d(np.arange(1, n + 1), touching)
    small = int(np.count_nonzero(totals[false - 1] <= LOW_ENERGY_MAX_E + 0.5))
    return found.size, events.size, false.size - small, small


def conventional_standin(seed=1):
    overrides = {"detector.height": 1040, "detector.width": 2152, "detector.gain_adu_per_e": 1.5,
                 "detector.read_noise_e": 2.0, "detector.pedestal_adu": 3371.0, "glow.probability": 0.0,
                 "clusters.points_per_mpix": [14.0, 14.0], "clusters.worms_per_mpix": [8.0, 8.0],
                 "clusters.muons_per_mpix": [5.0, 5.0], "clusters.alphas_per_mpix": [0.0, 0.0],
                 "clusters.point_energy_ev": [2000.0, 20000.0],
                 "readout.amplifier_cols": 2, "readout.amplifier_rows": 2, "readout.pedestal_offset_adu": [0.0, 396.0],
                 "readout.noise_spread": 0.1, "readout.gain_spread": 0.05}
    sim = simulate_image(load_config("damic", overrides=overrides), seed=seed)
    return np.clip(np.round(sim.image), 0, 65535).astype(np.uint16), sim


def lta_standin(seed=2):
    overrides = {"detector.height": 40, "detector.width": 5000, "detector.prescan_columns": 8,
                 "detector.gain_adu_per_e": 250.0, "detector.pedestal_adu": 2.0e5, "glow.probability": 0.0,
                 "hot.pixels_per_mpix": [0.0, 0.0], "hot.columns": [0, 0], "hot.rows": [0, 0],
                 "hot.streaks_per_mpix": [0.0, 0.0],
                 "clusters.points_per_mpix": [20.0, 20.0], "clusters.worms_per_mpix": [10.0, 10.0],
                 "clusters.muons_per_mpix": [8.0, 8.0], "clusters.alphas_per_mpix": [0.0, 0.0],
                 "clusters.point_energy_ev": [500.0, 20000.0],
                 "readout.sawtooth_e": [2.0, 6.0], "readout.sawtooth_period_px": [150, 350],
                 "readout.sawtooth_decay_px": [20.0, 80.0], "readout.saturated_columns": [1, 2]}
    config = load_config("skipper", overrides=overrides)
    rng = np.random.default_rng(seed)
    sims = {f"HDU{k}": simulate_image(config, rng=rng) for k in range(1, 5)}
    for number, sim in enumerate(sims.values()):
        sim.image += np.float32(3.0e4 * number)
    header = fits.Header({"CCDNCOL": 2 * 4992, "CCDNPRES": 8, "NCOL": 5000, "NSAMP": 500})
    return sims, header


def standin_tests(tmp, model=None):
    """(c): glowing share, events found and false clusters on the two stand-ins."""
    image, sim = conventional_standin()
    labels = labels_of(write(tmp / "conventional.fits", image), tmp, model=model)
    found, events, false, _ = event_scores(sim, labels)
    rows = [("(c) conventional 4-amp stand-in 1040x2152 uint16", "glowing share", np.mean(labels == GLOWING),
             "<= 0.01"),
            ("(c) conventional 4-amp stand-in", f"events found {found}/{events}", found / events, ">= 0.95")]
    sims, header = lta_standin()
    lta = write(tmp / "lta.fits", {name: s.image for name, s in sims.items()}, header)
    labels = labels_of(lta, tmp, list(sims), model=model)
    totals = np.zeros(4, int)
    for name, sim in sims.items():
        totals += event_scores(sim, labels[name])
    rows += [("(c) LTA-like stand-in 4 x (40x5000), saw-tooth", "glowing share, worst HDU",
              max(np.mean(lab == GLOWING) for lab in labels.values()), "<= 0.02"),
             ("(c) LTA-like stand-in", f"events found {totals[0]}/{totals[1]}", totals[0] / totals[1], ">= 0.90"),
             ("(c) LTA-like stand-in", "false clusters above 4 e-", totals[2], "<= 4"),
             ("(c) LTA-like stand-in", "dark-electron groups of 1-4 e- called cluster", totals[3], "-")]
    return rows


def table(rows):
    lines = ["| check | measure | value | target |", "|---|---|---|---|"]
    for check, measure, value, target in rows:
        lines.append(f"| {check} | {measure} | {value:.4f} | {target} |" if isinstance(value, float)
                     else f"| {check} | {measure} | {value} | {target} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"save the table to {RESULTS}")
    parser.add_argument("--model", help="model file to measure instead of the shipped model (not with --write)")
    args = parser.parse_args()
    if args.model and args.write:
        parser.error("--write records the shipped model; measure another with --model alone")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = (self_tests(tmp, model=args.model) + baseline_tests(tmp, model=args.model)
                + sample_sawtooth_test(tmp, model=args.model) + standin_tests(tmp, model=args.model))
    text = table(rows)
    print(text)
    if args.write:
        RESULTS.write_text("# Real readouts: amplifier segments, baselines, stand-ins\n\n"
                           "`python benchmarks/readouts.py --write` with the shipped model and default pipeline "
                           f"options ({describe()}).\n\n{text}\n")


if __name__ == "__main__":
    main()
