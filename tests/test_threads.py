"""Thread defaults: OMP_WAIT_POLICY=PASSIVE unless the user set it; ``facekit --threads N``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from facekit.cli import main
from facekit.threads import set_threads

from .fakes import make_faces

REPO = Path(__file__).resolve().parents[1]
PROBE = "import facekit, torch, os; print(os.environ.get('OMP_WAIT_POLICY'), torch.get_num_threads())"


def run_probe(**env: str) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True,
                         text=True, check=True)
    return out.stdout.split()


def test_import_sets_passive_wait_policy_unless_the_user_set_one():
    assert run_probe()[0] == "PASSIVE"
    assert run_probe(OMP_WAIT_POLICY="ACTIVE")[0] == "ACTIVE"
    # the number of threads stays the user's (or torch's own default)
    assert run_probe(OMP_NUM_THREADS="1") == ["PASSIVE", "1"]


def test_cli_threads_option_sets_torchs_threads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FACEKIT_CACHE", str(tmp_path / "cache"))
    root = make_faces(tmp_path / "lfw")
    before = torch.get_num_threads()
    want = 3 if before != 3 else 2
    try:
        assert main(["--threads", str(want), "lfw", "verify", "--root", str(root)]) == 0
        assert torch.get_num_threads() == want
        assert main(["lfw", "verify", "--root", str(root)]) == 0  # no option: left as it is
        assert torch.get_num_threads() == want
    finally:
        torch.set_num_threads(before)
    for bad in ("0", "-1", "two"):
        with pytest.raises(SystemExit) as e:
            main(["--threads", bad, "lfw", "verify"])
        assert e.value.code == 2
        assert "--threads: expected a positive integer" in capsys.readouterr().err
    with pytest.raises(ValueError, match="positive integer"):
        set_threads(0)
    assert set_threads(None) == before


def test_keep_freed_memory_reports_whether_it_applied(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import platform

    from facekit.threads import MALLOC_ENV, keep_freed_memory

    for k in MALLOC_ENV:
        monkeypatch.delenv(k, raising=False)
    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert keep_freed_memory() is False  # the user's own setting is left as it is
