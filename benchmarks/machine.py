"""One line describing the machine a benchmark ran on, for its results file."""

import datetime
import os
import platform
import sys
from pathlib import Path

import numpy as np

#: AMD family 23 is Zen / Zen 2, 25 Zen 3 / Zen 4; the flags say what the network can use.
_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_bf16": "AVX-512 BF16", "amx_bf16": "AMX"}


def describe():
    """CPU (model, family, vector extensions), cores, memory, Python, numpy and torch versions, date."""
    fields = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    cpu = fields.get("model name", platform.processor() or platform.machine())
    flags = set(fields.get("flags", "").split())
    family = f"family {fields['cpu family']} model {fields['model']}" if "cpu family" in fields else ""
    vector = ", ".join(name for flag, name in _FLAGS.items() if flag in flags) or "no AVX2"
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    torch = sys.modules.get("torch")
    software = f"Python {platform.python_version()}, numpy {np.__version__}"
    if torch is not None:
        software += f", torch {torch.__version__} ({torch.get_num_threads()} threads)"
    return (f"{cpu} ({family}; {vector}), {os.cpu_count()} cores, {ram:.0f} GiB RAM; {software}; "
            f"{datetime.date.today().isoformat()}")
