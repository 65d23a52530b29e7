"""The README figure of the search products: pixel counts against electrons, masked and exposed.

    python benchmarks/search_figure.py [--out docs/search_products.png]

Runs ``process_file`` (shipped model) on the bundled DAMIC-M frame and histograms the charge of
the pixels of all four CCDs in electrons, split by the MASK extensions into masked and exposed
pixels, with the Poisson x Gaussian model of the summary's ``dark_e`` and ``noise_e`` over the
exposed pixels.
"""

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402
from scipy import stats  # noqa: E402

from ccdseg.calib.electrons import to_electrons  # noqa: E402
from ccdseg.pipeline.demo import sample_path  # noqa: E402
from ccdseg.pipeline.job import process_file  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "docs" / "search_products.png"
BIN_E = 0.05


def main():
    """Write the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"PNG to write ({OUT.name} in docs/)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        process_file(sample_path(), out)
        with fits.open(Path(out) / "damicm_module_test_seg.fits") as hdul:
            summary = Table(hdul["SUMMARY"].data)
            masks = {hdu.name[len("MASK_"):]: hdu.data for hdu in hdul if hdu.name.startswith("MASK_")}
    exposed_values, masked_values, model = [], [], 0.0
    edges = np.arange(-1.0, 10.0 + BIN_E, BIN_E)
    with fits.open(sample_path()) as hdul:
        for row in summary:
            electrons, _ = to_electrons(hdul[row["hdu"]].data.astype(np.float64), row["gain"])
            exposed = masks[row["hdu"]] == 0
            exposed_values.append(electrons[exposed])
            masked_values.append(electrons[~exposed])
            k = np.arange(30)[:, None]
            shares = stats.poisson.pmf(k, row["dark_e"]) * np.diff(
                stats.norm.cdf((edges[None, :] - k) / row["noise_e"]), axis=1)
            model = model + exposed.sum() * shares.sum(axis=0)
    figure, axis = plt.subplots(figsize=(8, 4.5))
    centres = (edges[:-1] + edges[1:]) / 2
    for values, label, colour in ((np.concatenate(masked_values), "masked", "#d7263d"),
                                  (np.concatenate(exposed_values), "exposed (no mask bit)", "#0072b2")):
        counts, _ = np.histogram(values, bins=edges)
        axis.step(centres, counts, where="mid", color=colour, label=f"{label}: {values.size} px")
    axis.plot(centres, model, color="black", lw=0.8, ls="--",
              label="Poisson x Gaussian of the summary's dark_e, noise_e")
    axis.set_yscale("log")
    axis.set_ylim(0.5, None)
    axis.set_xlabel("pixel charge (e-)")
    axis.set_ylabel(f"pixels per {BIN_E} e-")
    darks = ", ".join(f"{row['hdu']} {row['dark_e']:.3f}" for row in summary)
    axis.set_title(f"DAMIC-M module test, 4 CCDs: dark_e (e-/pix) {darks}", fontsize=9)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
