"""Which network and tiling to ship: time per tile and per frame, and label agreement of cheaper paths.

Usage::

    python benchmarks/network_choice.py [--frame 1024x1024] [--repeats 5] [--write]

Three tables, all on this machine:

1. Architectures (random initialisation: speed does not depend on the weights): parameters,
   convolution multiply-adds per pixel, milliseconds per 576 x 576 tile (512 px + 64 px overlap,
   batch 1, channels_last) in float32 and under bf16 autocast, and the network time of a
   4096 x 4096 frame (tiles of :func:`ccdseg.infer.tiling.tile_grid` x time per tile).
2. Tilings of the shipped model: work (tile pixels run / frame pixels), time and label
   agreement with the default 512 px tiles and 64 px overlap, on a synthetic frame.
3. int8: the shipped model exported to ONNX and quantised statically (QDQ, per-channel
   weights, calibrated on tiles of the frame) with ONNX Runtime, against float32 PyTorch.

Accuracy after equal trainings is not measured here (see ``benchmarks/results/network_choice.md``).
"""

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import describe  # noqa: E402 (benchmarks are scripts, not a package)
from speed import conv_macs, synthetic_frame  # noqa: E402 (benchmarks are scripts, not a package)

RESULTS = Path(__file__).parent / "results" / "network_choice.md"
TILE = 576
FRAME = (4096, 4096)
TILINGS = [(512, 64), (1024, 64), (1024, 32), (768, 32), (512, 32)]


def tile_ms(net, precision, repeats):
    """Median milliseconds of one forward pass on a (1, 1, TILE, TILE) tile."""
    import torch

    x = torch.randn(1, 1, TILE, TILE).contiguous(memory_format=torch.channels_last)
    times = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        net(x)
        for _ in range(repeats):
            start = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def architectures(repeats):
    """Rows of table 1."""
    import torch

    from ccdseg.infer.tiling import tile_grid
    from ccdseg.nn.model import build_model, count_parameters, input_multiple

    rows = []
    for name in ("default", "halfres"):
        torch.manual_seed(0)
        net = build_model(name).eval().to(memory_format=torch.channels_last)
        tiles = len(tile_grid(FRAME, 512, 64, multiple=input_multiple(name)))
        row = {"arch": name, "params": count_parameters(net), "macs": conv_macs(net, (TILE, TILE)) / TILE ** 2}
        for precision in ("fp32", "bf16"):
            row[precision] = tile_ms(net, precision, repeats)
            row[f"frame_{precision}"] = tiles * row[precision] / 1e3
        rows.append(row)
    return rows


def timed_segment(image, **kwargs):
    """Labels of :func:`ccdseg.infer.predict.segment` and its wall time (s)."""
    from ccdseg.infer.predict import segment

    start = time.perf_counter()
    labels, _ = segment(image, return_probabilities=False, **kwargs)
    return labels, time.perf_counter() - start


def tilings(image):
    """Rows of table 2 and the reference labels (default tiling, float32)."""
    from ccdseg.infer.tiling import tile_grid

    rows, reference = [], None
    for tile, overlap in TILINGS:
        labels, seconds = timed_segment(image, tile_size=tile, overlap=overlap, precision="fp32")
        reference = labels if reference is None else reference
        grid = tile_grid(image.shape, tile, overlap, multiple=8)
        work = len(grid) * grid.tile_shape[0] * grid.tile_shape[1] / image.size
        rows.append({"tiling": f"{tile} px, {overlap} px overlap", "work": work, "seconds": seconds,
                     "agree": float(np.mean(labels == reference))})
    return rows, reference


def int8_rows(image, reference, tmp):
    """Rows of table 3: float32 and int8 ONNX Runtime against float32 PyTorch."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from ccdseg.infer.onnx import INPUT_NAME, export_onnx
    from ccdseg.infer.tiling import tile_grid
    from ccdseg.nn.model import load_model
    from ccdseg.nn.normalize import normalization_stats, normalize

    model = load_model()
    fp32_path, int8_path = Path(tmp) / "shipped.onnx", Path(tmp) / "shipped_int8.onnx"
    export_onnx(model, fp32_path)
    network_input = normalize(image, model.normalization, stats=normalization_stats(image, model.normalization))
    grid = tile_grid(image.shape, 512, 64, multiple=8)
    th, tw = grid.tile_shape
    tiles = [network_input[None, None, y0:y0 + th, x0:x0 + tw] for y0, x0 in grid.starts[:8]]

    class Tiles(CalibrationDataReader):
        def __init__(self):
            self.left = iter(tiles)

        def get_next(self):
            tile = next(self.left, None)
            return None if tile is None else {INPUT_NAME: tile}

    quantize_static(fp32_path, int8_path, Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    quantised = onnx.load(int8_path)  # keep the ccdseg metadata that load_onnx_model checks
    onnx.helper.set_model_props(quantised, {p.key: p.value for p in onnx.load(fp32_path).metadata_props})
    onnx.save(quantised, int8_path)
    rows = []
    for name, path in (("ONNX Runtime float32", fp32_path), ("ONNX Runtime int8 (static, QDQ)", int8_path)):
        labels, seconds = timed_segment(image, model=path, engine="onnx", precision="fp32")
        rows.append({"path": name, "seconds": seconds, "agree": float(np.mean(labels == reference))})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frame", default="1024x1024", help="synthetic frame for tables 2 and 3, WIDTHxHEIGHT")
    parser.add_argument("--repeats", type=int, default=5, help="forward passes per tile time (median)")
    parser.add_argument("--write", action="store_true", help=f"save the tables to {RESULTS}")
    args = parser.parse_args()
    import torch

    from ccdseg.infer.predict import _native_bf16

    width, height = (int(v) for v in args.frame.lower().split("x"))
    image = synthetic_frame((height, width), seed=1)
    lines = [f"## 1. Architectures: one {TILE}x{TILE} tile, batch 1, channels_last",
             "", "| arch | params | MAC / px | fp32 ms / tile | bf16 ms / tile | 4096² network s, fp32 | "
             "4096² network s, bf16 |", "|---|---|---|---|---|---|---|"]
    for r in architectures(args.repeats):
        lines.append(f"| {r['arch']} | {r['params']:,} | {r['macs'] / 1e3:.1f} k | {r['fp32']:.0f} | {r['bf16']:.0f} | "
                     f"{r['frame_fp32']:.1f} | {r['frame_bf16']:.1f} |")
    lines += ["", f"## 2. Tilings of the shipped model, float32, {args.frame} synthetic frame",
              "", "| tiling | work (tile px / frame px) | s / frame | labels agreeing with 512 px / 64 px |",
              "|---|---|---|---|"]
    rows, reference = tilings(image)
    for r in rows:
        lines.append(f"| {r['tiling']} | {r['work']:.2f} | {r['seconds']:.1f} | {100 * r['agree']:.3f} % |")
    lines += ["", f"## 3. int8 inference of the shipped model, {args.frame} synthetic frame",
              "", "| path | s / frame | labels agreeing with float32 PyTorch |", "|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for r in int8_rows(image, reference, tmp):
            lines.append(f"| {r['path']} | {r['seconds']:.1f} | {100 * r['agree']:.3f} % |")
    lines += ["", f"Native bf16 (oneDNN): {_native_bf16()}; CPU capability {torch.backends.cpu.get_cpu_capability()}; "
              f"{torch.get_num_threads()} threads; {platform.machine()}."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write:
        RESULTS.write_text(f"# Network choice\n\nMachine: {describe()}\n\n"
                           f"Command: `python benchmarks/network_choice.py {' '.join(sys.argv[1:])}`\n\n{text}")
        print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
