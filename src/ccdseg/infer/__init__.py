"""Whole-image prediction: tiling and blending, the torch and ONNX Runtime engines."""

#: Default tile side (px): 512 px tiles with a 64 px overlap compute 1.27x a frame's pixels,
#: 256 px tiles 1.72x, with the same context at every tile edge (benchmarks/speed.py).
TILE_SIZE = 512
#: Engines that run the network: PyTorch, or ONNX Runtime (``pip install 'ccdseg[onnx]'``).
ENGINES = ("torch", "onnx")
#: Network arithmetic: bf16 autocast (torch only) or fp32.
PRECISIONS = ("bf16", "fp32")
