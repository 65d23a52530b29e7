"""The built-in demonstration: a simulated full frame and the bundled DAMIC-M sample, end to end."""

from importlib import resources
from pathlib import Path

from ccdseg import io, metrics
from ccdseg.pipeline import job as pipeline
from ccdseg.sim.config import load_config
from ccdseg.sim.simulate import simulate_image
from ccdseg.sim.truth import write_simulation

#: The real DAMIC-M module-test image shipped with the package (4 CCDs of 320 x 640).
SAMPLE = "damicm_module_test.fz"


def sample_path():
    """Path of the bundled DAMIC-M sample image."""
    return Path(str(resources.files("ccdseg") / "data" / SAMPLE))


def run_demo(out_dir="ccdseg_demo", size=(4096, 4096), preset="damic", seed=2026, model=None,
             overwrite=True, progress=True):
    """Simulate a frame, segment it and the bundled sample, write every output, score against truth.

    Parameters
    ----------
    out_dir : str or Path
        Where the simulated frame (``demo_<preset>.fits`` and its truth) and all outputs go.
    size : (int, int)
        Frame size (rows, columns); the default is a full 4k x 4k DAMIC CCD.
    preset : str
        Simulation preset of the frame.
    seed : int
        Seed of the simulated frame.
    model : str, Path or Model, optional
        Network to use; default the shipped model.

    Returns
    -------
    dict
        ``results`` (pipeline results of both files), ``failures``, and for the simulated
        frame against its truth: ``confusion`` (pixels), ``clusters`` (object metrics of
        :func:`ccdseg.metrics.cluster_object_metrics`) and ``report`` (both as text).
    """
    out_dir = Path(out_dir)
    config = load_config(preset, overrides={"detector.height": size[0], "detector.width": size[1],
                                            "glow.probability": 1.0, "hot.columns": [1, 3]})
    simulation = simulate_image(config, seed=seed)
    frame = out_dir / f"demo_{preset}.fits"
    write_simulation(simulation, frame, keys={"PRESET": preset, "SEED": seed}, overwrite=overwrite)
    results, failures = pipeline.process_files([frame, sample_path()], out_dir, model=model, overwrite=overwrite,
                                               progress=progress)
    predicted = io.read_images(out_dir / f"{io.fits_stem(frame)}_seg.fits", hdu="LABELS")[0].data.astype("uint8")
    confusion = metrics.confusion_matrix(simulation.labels, predicted)
    objects = metrics.cluster_object_metrics(simulation.ids, simulation.truth, predicted,
                                             cluster_charge=simulation.charge["cluster"])
    report = (metrics.format_report(confusion)
              + f"\nclusters found: {objects['n_detected']} of {objects['n_true']} "
                f"(efficiency {objects['efficiency']:.3f}), false clusters per Mpix {objects['false_per_mpix']:.2f}, "
                f"charge completeness {objects['charge_completeness']:.3f}, "
                f"50 % of clusters found at {objects['charge_at_level_e']:.1f} e-\n")
    return {"results": results, "failures": failures, "confusion": confusion, "clusters": objects, "report": report}
