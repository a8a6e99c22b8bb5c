"""``facekit reproduce``: run the five notebooks in order and collect what they made.

Each notebook narrates one step and calls the library; this module only runs them with
papermill (``kernel_name="python3"``), with the parameters of a *preset*:

* ``quick``: CPU, small settings (a few training steps on a few images, 20 pairs per
  fold); minutes on a laptop, and what the tests run;
* ``full``: GPU settings (device ``auto``, real training lengths, all 6,000 pairs).

The output folder holds::

    DIR/notebooks/NN_name.ipynb     the executed notebooks, outputs included
    DIR/NN_name/                    what each notebook wrote: figures (PNG) and summary.json
    DIR/rate_accuracy.json          the results JSON of notebook 04 (with provenance)
    DIR/rate_accuracy.png           its figure
    DIR/summary.json                preset, parameters, time and status of each notebook
    DIR/report.md                   a short report: key numbers, the table, the figures

A notebook that fails is reported (with the executed notebook showing the failing cell)
and the others still run; the command then exits non-zero.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .errors import FacekitError
from .fileio import write_json

#: the notebooks, in the order they are run
NOTEBOOKS = (
    "01_build_autoencoder",
    "02_train_on_gpu",
    "03_joint_finetune",
    "04_codec_comparison",
    "05_interactive_explorer",
)

#: parameters of each preset: "*" applies to every notebook (where it has that parameter)
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "quick": {
        "*": {"quick": True, "device": "cpu"},
    },
    "full": {
        "*": {"quick": False, "device": "auto"},
        "02_train_on_gpu": {"steps": 20000, "batch_size": 32, "crop": 128, "lr": 5e-4,
                            "n_train_images": None, "chunks": 40},
        "03_joint_finetune": {"steps": 2000, "batch_size": 16, "n_train_images": None,
                              "lambdas": [0.0, 0.02, 0.1], "n_test_images": 8},
        "04_codec_comparison": {"per_fold": None, "sweep": None, "use_saved": False},
        "05_interactive_explorer": {"n_images": 12},
    },
}


class Record:
    """What a notebook shows, written as it goes into ``out_dir``: figures and ``summary.json``.

    ``rec.figure(fig, "name.png")`` saves a matplotlib figure; ``rec["key"] = value`` (or
    :meth:`update`) records a key number. ``summary.json`` is rewritten after each call,
    so a notebook that stops half-way still leaves what it had; tests and
    :func:`reproduce` read it.
    """

    def __init__(self, out_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.numbers: dict[str, Any] = {}
        self.figures: list[str] = []

    def figure(self, fig: Any, name: str, dpi: int = 110) -> Path:
        path = self.dir / name
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        if name not in self.figures:
            self.figures.append(name)
        self.save()
        return path

    def __setitem__(self, key: str, value: Any) -> None:
        self.numbers[key] = value
        self.save()

    def __getitem__(self, key: str) -> Any:
        return self.numbers[key]

    def update(self, numbers: dict[str, Any] | None = None, **more: Any) -> None:
        self.numbers.update(numbers or {}, **more)
        self.save()

    def save(self) -> Path:
        path = self.dir / "summary.json"
        write_json(path, {**self.numbers, "figures": self.figures})
        return path


def resolve_device(device: Any = "auto") -> str:
    """``"auto"`` (or None) -> ``"cuda"`` when a GPU is there, else ``"cpu"``; others unchanged."""
    if device in (None, "auto"):
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except ImportError:
            return "cpu"
    return str(device)


def repo_root() -> Path:
    """The checkout facekit is installed from (editable installs)."""
    return Path(__file__).resolve().parent.parent


def notebooks_dir() -> Path:
    """The repository's ``notebooks/`` (facekit installed from a checkout, e.g. editable)."""
    here = repo_root() / "notebooks"
    if here.is_dir():
        return here
    raise FacekitError(
        "the notebooks are not installed with facekit: run from a checkout "
        "(pip install -e .) or pass --notebooks PATH"
    )


def preset_parameters(preset: str, notebook: str) -> dict[str, Any]:
    """The parameters a preset gives one notebook (before filtering to those it declares)."""
    if preset not in PRESETS:
        raise FacekitError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    return {**p.get("*", {}), **p.get(notebook, {})}


def declared_parameters(path: Path) -> dict[str, Any]:
    """``{name: default}`` of the notebook's ``parameters`` cell (papermill's inspection)."""
    import papermill as pm

    return {k: v.get("default") for k, v in pm.inspect_notebook(str(path)).items()}


def run_notebook(
    src: Path,
    dst: Path,
    parameters: dict[str, Any],
    *,
    cwd: Path | None = None,
    kernel_name: str = "python3",
    log_output: bool = False,
    timeout: int | None = None,
) -> dict[str, Any]:
    """Execute one notebook with papermill; ``{"status", "seconds", "error"}``.

    Only the parameters the notebook declares are injected (papermill would add the
    others as stray variables).
    """
    import papermill as pm

    declared = declared_parameters(src)
    params = {k: v for k, v in parameters.items() if k in declared}
    dst.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    status, error = "ok", None
    try:
        pm.execute_notebook(
            str(src), str(dst), parameters=params, kernel_name=kernel_name, cwd=str(cwd) if cwd else None,
            progress_bar=False, log_output=log_output, execution_timeout=timeout,
        )
    except pm.PapermillExecutionError as e:
        status, error = "failed", f"cell {e.exec_count}: {e.ename}: {e.evalue}"
    return {"status": status, "seconds": round(time.perf_counter() - t0, 1), "error": error,
            "parameters": params}


def reproduce(
    out: str | os.PathLike[str],
    preset: str = "quick",
    *,
    root: str | os.PathLike[str] | None = None,
    only: Sequence[str] | None = None,
    notebooks: str | os.PathLike[str] | None = None,
    overrides: dict[str, Any] | None = None,
    kernel_name: str = "python3",
    log_output: bool = False,
    on_done: Callable[[str, dict], None] | None = None,
) -> dict[str, Any]:
    """Run the notebooks of ``preset`` into ``out``; returns the summary (also in ``summary.json``).

    ``root``: LFW (default ``$FACEKIT_LFW``). ``only``: notebook names or number prefixes
    (``["01", "04"]``). ``overrides``: parameters for every notebook, over the preset's.
    """
    out = Path(out).resolve()
    src_dir = Path(notebooks) if notebooks else notebooks_dir()
    chosen = _select(only)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"preset": preset, "out": str(out), "notebooks": {}}
    t0 = time.perf_counter()
    for name in chosen:
        src = src_dir / f"{name}.ipynb"
        if not src.exists():
            raise FacekitError(f"notebook {src} does not exist")
        nb_out = out / name
        params = {**preset_parameters(preset, name), **(overrides or {}),
                  "out_dir": str(nb_out), "lfw_root": str(Path(root).resolve()) if root else None}
        nb_out.mkdir(parents=True, exist_ok=True)
        r = run_notebook(src, out / "notebooks" / f"{name}.ipynb", params, cwd=nb_out,
                         kernel_name=kernel_name, log_output=log_output)
        key = nb_out / "summary.json"
        r["numbers"] = json.loads(key.read_text()) if key.exists() else None
        summary["notebooks"][name] = r
        if on_done:
            on_done(name, r)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    res = out / "04_codec_comparison" / "rate_accuracy.json"
    if res.exists():
        shutil.copyfile(res, out / "rate_accuracy.json")
        fig = res.with_suffix(".png")
        if fig.exists():
            shutil.copyfile(fig, out / "rate_accuracy.png")
    summary["ok"] = all(r["status"] == "ok" for r in summary["notebooks"].values())
    write_json(out / "summary.json", summary)
    (out / "report.md").write_text(report_markdown(summary, out))
    return summary


def _select(only: Sequence[str] | None) -> list[str]:
    if not only:
        return list(NOTEBOOKS)
    chosen = []
    for want in only:
        match = [n for n in NOTEBOOKS if n == want or n.startswith(f"{want}_") or n.split("_", 1)[0] == want]
        if not match:
            raise FacekitError(f"no notebook {want!r}; the notebooks are {', '.join(NOTEBOOKS)}")
        chosen += [m for m in match if m not in chosen]
    return [n for n in NOTEBOOKS if n in chosen]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and all(isinstance(x, (int, float, str)) for x in v):
        return ", ".join(_fmt(x) for x in v)
    return str(v)


def _nested(v: Any) -> bool:
    return isinstance(v, dict) or (isinstance(v, list) and not all(isinstance(x, (int, float, str)) for x in v))


def _headline_learned(results: dict[str, Any]) -> list[str]:
    """The headline learned codecs the results hold, else every learned one."""
    from .codecs.names import is_learned
    from .codecs.registry import PAPER, RECOGNITION_FIRST, RECOMMENDED

    names = [c for c in (RECOMMENDED, RECOGNITION_FIRST, PAPER) if c in results["codecs"]]
    return names or [n for n in results["codecs"] if is_learned(n)]


def _rate_accuracy_section(res: Path) -> list[str]:
    """The report's rate-accuracy section: this run's table and goals (not judged on fewer
    than all 6,000 pairs), and the goals on the committed full-LFW results beside it."""
    from .evaluate import load_results
    from .goals import goals_table, not_judged
    from .plots import summary_table

    results = load_results(res)
    prot = results.get("protocol", {})
    lines = [
        "",
        "## Rate and accuracy on LFW",
        "",
        f"{prot.get('n_pairs', '?')} pairs of `{prot.get('pairs_file', 'pairs.txt')}` "
        f"({'all' if not prot.get('per_fold') else str(prot['per_fold']) + ' per fold'}), "
        f"recogniser {results.get('recognizer', {}).get('name', '?')}, "
        f"alignment {prot.get('alignment', '?')}. Results: [`rate_accuracy.json`](rate_accuracy.json).",
    ]
    full_path = repo_root() / "results" / "rate_accuracy.json"
    small = not_judged(results) is not None
    full = load_results(full_path) if small and full_path.exists() else None
    if full is not None:
        lines += ["", f"This run is a small-sample check. The figure draws the committed results on all "
                  f"{full['protocol']['n_pairs']:,} pairs (`results/rate_accuracy.json`) as curves, and this "
                  "run's points over them, hollow, with error bars of one standard deviation over the folds."]
    lines += ["", summary_table(results), "", "![rate-accuracy](rate_accuracy.png)"]
    goals = goals_table(results, _headline_learned(results))
    if goals:
        lines += ["", "### The goals, checked against these numbers (`facekit.goals`)", "", goals]
    if full is not None and not_judged(full) is None:
        lines += ["", "### The goals on all 6,000 pairs (`results/rate_accuracy.json`)", "",
                  goals_table(full, _headline_learned(full))]
    return lines


def report_markdown(summary: dict[str, Any], out: Path) -> str:
    """The short ``report.md``: status and time of each notebook, key numbers, table, figures."""
    lines = [
        f"# facekit reproduction ({summary['preset']} preset)",
        "",
        "Bian et al., \"A Deep Image Compression Framework for Face Recognition\" (arXiv:1907.01714), "
        "reproduced by running the notebooks with papermill. Executed notebooks are in `notebooks/`.",
        "",
        "| notebook | status | time (s) |",
        "| --- | --- | --- |",
    ]
    for name, r in summary["notebooks"].items():
        status = r["status"] if r["status"] == "ok" else f"**{r['status']}**: {r['error']}"
        lines.append(f"| [{name}](notebooks/{name}.ipynb) | {status} | {r['seconds']} |")
    lines.append(f"\nTotal: {summary['seconds']} s.")
    if summary["preset"] == "quick":
        lines.append(
            "\nThe quick preset runs small settings on the CPU (a few training steps, 40 LFW pairs): "
            "it checks that every step works end to end; its accuracies are rough, and no goal is judged "
            "on them. The `full` preset (GPU) and `results/rate_accuracy.json` (all 6,000 pairs) hold "
            "the real numbers."
        )
    res = out / "rate_accuracy.json"
    if res.exists():
        lines += _rate_accuracy_section(res)
    lines += ["", "## Key numbers of each notebook", ""]
    for name, r in summary["notebooks"].items():
        nums = r.get("numbers") or {}
        lines.append(f"### {name}")
        lines.append("")
        if not nums:
            lines.append("(no summary.json)")
        for k, v in nums.items():
            if k != "figures" and not _nested(v):
                lines.append(f"- {k}: {_fmt(v)}")
        nested = [k for k, v in nums.items() if k != "figures" and _nested(v)]
        if nested:
            lines.append(f"- in [`{name}/summary.json`]({name}/summary.json): {', '.join(nested)}")
        for fig in nums.get("figures", []):
            lines.append(f"\n![{fig}]({name}/{fig})")
        lines.append("")
    return "\n".join(lines) + "\n"
