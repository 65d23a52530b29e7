"""Wall time and peak memory of segmenting one large frame: network models, deepCR and the classical baseline.

Usage::

    python benchmarks/speed.py [--model PATH] [--thesis-model PATH] [--sizes 4096x4096 6144x4128]
                               [--repeats N] [--methods shipped thesis deepcr classical] [--modes whole model]
                               [--preload LIB] [--write]

Every measurement runs in a fresh Python process, so that its peak resident memory (the child's
``ru_maxrss`` from ``os.wait4``) is its own. Two modes:

``whole``
    FITS file on disk -> :func:`ccdseg.pipeline.job.process_file` outputs (labels FITS, catalogue,
    regions, PNG), timed from the call, model loading included (a fresh ``ccdseg predict``
    process additionally spends the import time printed under the table).
``model``
    :func:`ccdseg.infer.predict.segment` (or :func:`ccdseg.measure.classical.segment_classical`) on an
    in-memory array, after a warm-up call on one tile that loads the model.

deepCR (Zhang & Bloom 2020; ``pip install deepCR``) runs its shipped "ACS-WFC" cosmic-ray mask
model on 256 px patches under ``torch.inference_mode``; "whole" reads the FITS file and writes the
mask as a uint8 FITS file. The table's "x deepCR" column is deepCR's time over each method's on the
same frame and mode: how many times deepCR's speed a method reaches.

Without ``--model`` the shipped model is used if installed, otherwise a randomly initialised
``default`` network (speed does not depend on the weights; the table says which). The thesis
network is randomly initialised unless ``--thesis-model`` is given. Achieved GFLOP/s counts the
multiply-adds of every convolution (forward hooks on one tile) times the tiles actually run
(overlap included), over the model-only time.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)

#: Peak of one large 3x3 convolution on this machine (GFLOP/s, bf16, channels_last, glibc malloc;
#: 422 with tcmalloc preloaded), from /work/shared/perf-notes.md.
PEAK_GFLOPS = {"bf16": 290.0, "fp32": 180.0}
RESULTS = Path(__file__).parent / "results" / "speed.md"


def synthetic_frame(shape, seed=0):
    """A float32 frame in ADU: noise, point-like and extended clusters, tracks, hot columns."""
    rng = np.random.default_rng(seed)
    height, width = shape
    image = rng.normal(1000.0, 3.0, shape).astype(np.float32)
    n = height * width // 8000
    ys, xs = rng.integers(2, height - 2, n), rng.integers(2, width - 2, n)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            image[ys + dy, xs + dx] += rng.uniform(10, 300, n) * (0.3 if dy or dx else 1.0)
    for _ in range(n // 20):
        y, x = rng.integers(0, height), rng.integers(0, width)
        length, angle = rng.integers(20, 200), rng.uniform(0, np.pi)
        t = np.arange(length)
        image[np.clip(y + t * np.sin(angle), 0, height - 1).astype(int),
              np.clip(x + t * np.cos(angle), 0, width - 1).astype(int)] += 60.0
    image[:, rng.integers(0, width, 5)] += 25.0
    return image


def conv_macs(net, tile_shape):
    """Multiply-adds of all convolutions for one (1, 1, *tile_shape) input."""
    import torch

    macs = []

    def hook(module, inputs, output):
        kernel = module.kernel_size[0] * module.kernel_size[1] // module.groups
        if isinstance(module, torch.nn.ConvTranspose2d):
            macs.append(inputs[0].numel() * module.out_channels * kernel)
        else:
            macs.append(output.numel() * module.in_channels * kernel)

    handles = [m.register_forward_hook(hook) for m in net.modules()
               if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d))]
    with torch.inference_mode():
        net(torch.zeros(1, 1, *tile_shape))
    for handle in handles:
        handle.remove()
    return sum(macs)


def worker(task):
    """Run one measurement in this (fresh) process; print a JSON line with the times."""
    start = time.perf_counter()
    if task["method"] == "deepcr":
        return deepcr_worker(task, start)
    from ccdseg.pipeline import job as pipeline
    if task["method"] != "classical":
        import ccdseg.infer.predict  # noqa: F401 (import time of torch counted with the imports)
    imported = time.perf_counter() - start
    if task["mode"] == "whole":
        options = {"method": "classical"} if task["method"] == "classical" else {"model": task["model"]}
        with tempfile.TemporaryDirectory(dir=task["tmp"]) as out_dir:
            t0 = time.perf_counter()
            pipeline.process_file(task["fits"], out_dir, overwrite=True, **options)
            seconds = time.perf_counter() - t0
    else:
        image = np.load(task["npy"])
        if task["method"] == "classical":
            from ccdseg.measure.classical import segment_classical
            t0 = time.perf_counter()
            segment_classical(image)
        else:
            from ccdseg.infer.predict import segment
            segment(image[:256, :256], task["model"])
            t0 = time.perf_counter()
            segment(image, task["model"])
        seconds = time.perf_counter() - t0
    print(json.dumps({"seconds": seconds, "import_s": imported}))


def deepcr_worker(task, start):
    """:func:`worker` for deepCR's mask model (ACS-WFC), 256 px patches, no inpainting."""
    import torch
    from astropy.io import fits
    from deepCR import deepCR

    imported = time.perf_counter() - start
    t0 = time.perf_counter()
    net = deepCR(mask="ACS-WFC", device="CPU")
    with torch.inference_mode():
        if task["mode"] == "whole":
            image = fits.getdata(task["fits"]).astype(np.float32)
            mask = net.clean(image, threshold=0.5, inpaint=False, patch=256)
            with tempfile.TemporaryDirectory(dir=task["tmp"]) as out_dir:
                fits.PrimaryHDU(mask.astype(np.uint8)).writeto(Path(out_dir) / "mask.fits")
        else:
            image = np.load(task["npy"])
            net.clean(image[:256, :256], threshold=0.5, inpaint=False, patch=256)
            t0 = time.perf_counter()
            net.clean(image, threshold=0.5, inpaint=False, patch=256)
    print(json.dumps({"seconds": time.perf_counter() - t0, "import_s": imported}))


def measure(task, preload=None):
    """Run :func:`worker` in a child process; its times, peak RSS and page faults."""
    env = dict(os.environ)
    if preload:
        env["LD_PRELOAD"] = preload
    load = os.getloadavg()[0]
    child = subprocess.Popen([sys.executable, __file__, "--worker", json.dumps(task)], stdout=subprocess.PIPE,
                             env=env, text=True)
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"measurement {task} failed with exit status {child.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    result.update(peak_gb=usage.ru_maxrss * 1024 / 1e9, minflt=usage.ru_minflt, cpu_s=usage.ru_utime + usage.ru_stime,
                  sys_s=usage.ru_stime, load=(load + os.getloadavg()[0]) / 2)
    return result


def prepare_models(args, tmp):
    """(name, path, description) of each network to measure."""
    import importlib.resources

    import torch

    from ccdseg.nn.model import SHIPPED_MODEL, build_model, count_parameters, save_model

    models = []
    shipped = importlib.resources.files("ccdseg").joinpath(SHIPPED_MODEL)
    for name, given, arch in (("shipped", args.model or (str(shipped) if shipped.is_file() else None), "default"),
                              ("thesis", args.thesis_model, "thesis")):
        if name not in args.methods:
            continue
        if given:
            models.append((name, given, f"{name} ({Path(given).name})"))
            continue
        torch.manual_seed(0)
        net = build_model(arch)
        path = Path(tmp) / f"{name}_random.pt"
        save_model(path, net, arch, None)
        label = "default arch" if name == "shipped" else "thesis arch"
        models.append((name, str(path), f"{name}: random-init {label}, {count_parameters(net) / 1e6:.2f} M params"))
    return models


def tile_work(model_path, shape):
    """Convolution MACs for one frame of ``shape`` with segment's default tiling, and the tile count."""
    from ccdseg.infer import TILE_SIZE
    from ccdseg.infer.tiling import default_overlap, tile_grid
    from ccdseg.nn.model import input_multiple, load_model

    tile, overlap = TILE_SIZE, default_overlap(TILE_SIZE)
    model = load_model(model_path)
    grid = tile_grid(shape, tile, overlap, multiple=input_multiple(model.arch))
    return conv_macs(model.net, grid.tile_shape) * len(grid), len(grid), (tile, overlap)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file of the shipped network (default: the installed one)")
    parser.add_argument("--thesis-model", help="model file of the thesis network (default: random init)")
    parser.add_argument("--sizes", nargs="+", default=["4096x4096", "6144x4128"], help="frame sizes, WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per measurement (median reported)")
    parser.add_argument("--methods", nargs="+", default=["shipped", "thesis", "deepcr", "classical"],
                        choices=["shipped", "thesis", "deepcr", "classical"])
    parser.add_argument("--modes", nargs="+", default=["whole", "model"], choices=["whole", "model"])
    parser.add_argument("--preload", help="library to LD_PRELOAD in the measured processes (e.g. tcmalloc)")
    parser.add_argument("--write", action="store_true", help=f"save the table to {RESULTS}")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))

    from astropy.io import fits

    with tempfile.TemporaryDirectory() as tmp:
        models = prepare_models(args, tmp)
        methods = [(name, path) for name, path, _ in models]
        methods += [(name, None) for name in ("deepcr", "classical") if name in args.methods]
        rows = []
        for size in args.sizes:
            width, height = (int(v) for v in size.lower().split("x"))
            image = synthetic_frame((height, width))
            npy, fits_path = Path(tmp) / f"{size}.npy", Path(tmp) / f"{size}.fits"
            np.save(npy, image)
            fits.PrimaryHDU(image).writeto(fits_path)
            del image
            for name, path in methods:
                work = tile_work(path, (height, width)) if path else None
                for mode in args.modes:
                    task = {"method": name, "mode": mode, "model": path, "npy": str(npy), "fits": str(fits_path),
                            "tmp": tmp}
                    runs = [measure(task, args.preload) for _ in range(args.repeats)]
                    rows.append(_summary(name, size, mode, runs, work))
                    print(_format_row(rows[-1]), flush=True)
    table = _table(rows)
    notes = _notes(models, rows, args)
    print()
    print(table)
    print(notes)
    if args.write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(f"# Speed benchmark\n\nMachine: {describe()}\n\nCommand: `python benchmarks/speed.py "
                           f"{' '.join(sys.argv[1:])}`\n\n{table}\n{notes}")
        print(f"wrote {RESULTS}")


def _summary(name, size, mode, runs, work):
    seconds = [run["seconds"] for run in runs]
    row = {"method": name, "size": size, "mode": mode, "seconds": float(np.median(seconds)), "min_s": min(seconds),
           "peak_gb": max(run["peak_gb"] for run in runs), "cpu_s": float(np.median([r["cpu_s"] for r in runs])),
           "minflt": int(np.median([r["minflt"] for r in runs])),
           "import_s": float(np.median([r["import_s"] for r in runs])),
           "load": float(np.mean([run["load"] for run in runs])), "gflops": None}
    width, height = (int(v) for v in size.split("x"))
    row["mpix_s"] = width * height / 1e6 / row["seconds"]
    if work and mode == "model":
        macs, n_tiles, tiling = work
        row["gflops"] = 2 * macs / 1e9 / row["seconds"]
        row["tiles"] = (n_tiles, tiling)
    return row


def _format_row(row):
    return (f"{row['method']} {row['size']} {row['mode']}: {row['seconds']:.2f} s, {row['peak_gb']:.2f} GB, "
            f"load {row['load']:.1f}")


def _table(rows):
    reference = {(r["size"], r["mode"]): r["seconds"] for r in rows if r["method"] == "shipped"}
    deepcr = {(r["size"], r["mode"]): r["seconds"] for r in rows if r["method"] == "deepcr"}
    lines = ["| method | frame (W x H) | mode | s / frame (median) | min s | x shipped | x deepCR | Mpix/s | CPU s | "
             "peak RSS GB | minor faults | GFLOP/s (% of peak) | load avg |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = reference.get((r["size"], r["mode"]))
        ratio = f"{r['seconds'] / ref:.2f}" if ref else "-"
        ref = deepcr.get((r["size"], r["mode"]))
        ratio += f" | {ref / r['seconds']:.2f}" if ref else " | -"
        gflops = (f"{r['gflops']:.0f} ({100 * r['gflops'] / PEAK_GFLOPS['bf16']:.0f} %)"
                  if r["gflops"] is not None else "-")
        lines.append(f"| {r['method']} | {r['size']} | {r['mode']} | {r['seconds']:.2f} | {r['min_s']:.2f} | {ratio} | "
                     f"{r['mpix_s']:.2f} | {r['cpu_s']:.1f} | {r['peak_gb']:.2f} | {r['minflt']:,} | {gflops} | "
                     f"{r['load']:.1f} |")
    return "\n".join(lines) + "\n"


def _notes(models, rows, args):
    lines = ["Models: " + "; ".join(description for _, _, description in models) + "."]
    tiled = next((r["tiles"] for r in rows if r.get("tiles")), None)
    if tiled:
        lines.append(f"Tiling: {tiled[1][0]} px tiles, {tiled[1][1]} px overlap (segment's defaults), bf16 autocast "
                     "(float32 on a CPU without native bf16).")
    imports = {r["method"]: r["import_s"] for r in rows if r["mode"] == "whole"}
    lines.append("Import time of a fresh process (not in the table): "
                 + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in imports.items()) + ".")
    lines.append(f"GFLOP/s: 2 x convolution multiply-adds actually computed (overlap included) / model-only time; "
                 f"peak {PEAK_GFLOPS['bf16']:.0f} GFLOP/s = one large bf16 3x3 convolution on this machine "
                 f"(perf-notes; 422 with tcmalloc).")
    lines.append(f"Each number is the median of {args.repeats} fresh process(es); 'load avg' is the 1-minute load "
                 f"average during the runs (2 cores: above ~2 the machine was shared and times are inflated)."
                 + (f" LD_PRELOAD={args.preload}." if args.preload else ""))
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
