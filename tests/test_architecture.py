"""The package's layers: data flows one way, torch stays in the network's modules, the CLI is light."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import ccdseg

PACKAGE = Path(ccdseg.__file__).parent

#: Stages from the bottom up; a module may import from its own stage and the ones below.
LAYERS = (
    ("_version", "errors", "classes", "checks", "settings"),
    ("io",),
    ("calib",),
    ("metrics", "plots"),
    ("sim",),
    ("nn",),
    ("infer",),
    ("measure",),
    ("evaluate",),
    ("pipeline",),
    ("cli",),
)
RANK = {stage: rank for rank, stages in enumerate(LAYERS) for stage in stages}
#: The only modules that may import torch: the network, its training and prediction.
TORCH_MODULES = {"nn.model", "nn.losses", "nn.train", "infer.predict", "infer.onnx"}


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        yield ".".join(p for p in parts if p != "__init__") or "__init__", path


def _imports(path):
    """Every module named by an import statement of the file, at any depth (lazy imports too)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "ccdseg":
            yield from (f"ccdseg.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def _stage(module):
    return module.split(".")[0]


def test_every_stage_is_known():
    stages = {_stage(module) for module, _ in _modules()} - {"__init__"}
    assert stages <= set(RANK), stages - set(RANK)


@pytest.mark.parametrize("module,path", list(_modules()), ids=[m for m, _ in _modules()])
def test_no_import_goes_up_a_layer(module, path):
    if module == "__init__":
        return  # the public API re-exports every stage, lazily
    own = RANK[_stage(module)]
    for imported in _imports(path):
        if imported.startswith("ccdseg.") and imported != "ccdseg._version":
            target = imported.removeprefix("ccdseg.")
            assert RANK[_stage(target)] <= own, f"ccdseg.{module} imports {imported} from a higher layer"
        assert imported != "ccdseg" or module == "__init__", f"ccdseg.{module} imports the package itself"
        if imported.split(".")[0] == "torch":
            assert module in TORCH_MODULES, f"ccdseg.{module} imports torch"


def test_the_package_never_points_outside_the_repository():
    for _, path in _modules():
        assert "../shared" not in path.read_text(), path


def test_help_imports_nothing_heavy():
    code = ("import sys; from ccdseg.cli import build_parser; build_parser(); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'scipy', 'astropy', 'matplotlib', 'numpy', 'tqdm'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_import_ccdseg_is_light_and_the_api_resolves():
    code = ("import sys, ccdseg; light = not {'torch', 'astropy', 'scipy'} & {m.split('.')[0] for m in sys.modules}; "
            "missing = [n for n in ccdseg.__all__ if not hasattr(ccdseg, n)]; print(light, missing)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True []"
