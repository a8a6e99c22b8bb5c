"""Every facekit module imports on its own: no circular imports, no module that works only after another."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import facekit

ROOT = Path(__file__).resolve().parent.parent

#: in a fresh interpreter: for each module, forget every facekit module imported so far and import
#: this one first (third-party packages stay loaded, so this takes seconds, not one interpreter each)
SCRIPT = """
import importlib, json, sys, traceback
failed = {}
for name in json.loads(sys.argv[1]):
    for key in [k for k in sys.modules if k == "facekit" or k.startswith("facekit.")]:
        del sys.modules[key]
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-3)
print(json.dumps(failed))
"""


def facekit_modules() -> list[str]:
    found = pkgutil.walk_packages(facekit.__path__, prefix="facekit.")
    return sorted({"facekit", *(m.name for m in found if not m.name.endswith("__main__"))})


def test_every_module_imports_alone_in_a_fresh_interpreter():
    modules = facekit_modules()
    assert {"facekit.codecs.roi", "facekit.codecs.names", "facekit.container", "facekit.codecs.learned"} <= set(modules)
    r = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(modules)], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    failed = json.loads(r.stdout.strip().splitlines()[-1])
    assert not failed, "\n".join(f"{k}:\n{v}" for k, v in failed.items())


def test_nothing_outside_codecs_is_imported_by_roi_code():
    """ROI coding lives in facekit.codecs and imports no module that imports facekit.codecs back."""
    code = ("import sys; import facekit.codecs.roi; "
            "print(sorted(k for k in sys.modules if k.startswith('facekit.') and not k.startswith('facekit.codecs')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, check=True)
    assert r.stdout.strip() == "['facekit.errors', 'facekit.threads']", r.stdout  # what facekit/__init__ imports
