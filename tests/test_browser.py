"""The explorer in a real browser: JupyterLab, notebook 05, Chromium driven by Playwright.

A fresh JupyterLab (its own root folder, settings, workspaces and token in a temporary
folder) serves a copy of ``notebooks/05_interactive_explorer.ipynb`` on 127.0.0.1 at a
free port; Debian's Chromium (``/usr/bin/chromium``, headless) opens it, runs all
cells, moves the rate slider, and checks that the bits per pixel shown and the
reconstruction change. Screenshots go to ``artifacts/`` (git-ignored).

Skips with the reason when Chromium, Playwright or LFW is missing
(``apt-get install chromium``; ``pip install playwright``; ``FACEKIT_LFW``).
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "05_interactive_explorer.ipynb"
ARTIFACTS = REPO / "artifacts"
CHROMIUM = os.environ.get("FACEKIT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]
#: seconds to wait for the notebook's cells to run and the explorer to show its numbers
RUN_TIMEOUT = 300

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.lfw]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _requirements() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"Chromium not found at {CHROMIUM}: apt-get install chromium (or set FACEKIT_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("Playwright is not installed: pip install playwright")
    try:
        import jupyterlab  # noqa: F401
    except ImportError:
        pytest.skip("JupyterLab is not installed: pip install jupyterlab")


@pytest.fixture(scope="module")
def lab(lfw_root, tmp_path_factory):
    """A JupyterLab server of its own; yields (base URL, token, its log file)."""
    _requirements()
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "root"
    root.mkdir()
    shutil.copyfile(NOTEBOOK, root / NOTEBOOK.name)
    port, token = _free_port(), secrets.token_hex(16)
    # no "Jupyter news?" toast over the screenshots
    notif = tmp / "settings" / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True)
    (notif / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    env = {
        **os.environ,
        "FACEKIT_LFW": str(lfw_root),
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "IPYTHONDIR": str(tmp / "ipython"),
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        f"--LabApp.workspaces_dir={tmp / 'workspaces'}", f"--LabApp.user_settings_dir={tmp / 'settings'}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI run as root
    log = tmp / "jupyterlab.log"
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"JupyterLab exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"JupyterLab did not start in 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, token, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def test_explorer_slider_changes_rate_and_image(lab):
    from playwright.sync_api import sync_playwright

    base, token, log = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(f"{base}/lab/tree/{NOTEBOOK.name}?token={token}&reset")
            page.wait_for_function("() => window.jupyterapp && window.jupyterapp.shell", timeout=120_000)
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=120_000)
            # wait for the kernel, then run every cell through JupyterLab's own command
            page.wait_for_function(
                """() => {
                    const w = window.jupyterapp.shell.currentWidget;
                    return w && w.sessionContext && w.sessionContext.session
                        && w.sessionContext.session.kernel
                        && w.sessionContext.session.kernel.status === 'idle';
                }""",
                timeout=120_000,
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            try:
                page.wait_for_function(
                    """() => { const e = document.querySelector('.fk-bpp');
                               return e && /\\d\\.\\d+\\s*bpp/.test(e.innerText); }""",
                    timeout=RUN_TIMEOUT * 1000,
                )
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "browser_explorer_failed.png"), full_page=True)
                raise
            page.locator(".fk-explorer").first.scroll_into_view_if_needed()
            page.screenshot(path=str(ARTIFACTS / "browser_explorer_before.png"), full_page=True)
            bpp_before = _text(page, ".fk-bpp")
            src_before = page.locator(".fk-reconstruction").first.get_attribute("src")
            assert src_before, "the reconstruction image has no source"
            assert not _text(page, ".fk-status").strip(), _text(page, ".fk-status")

            # move the rate slider: focus its handle and step to the highest setting
            handle = page.locator(".fk-rate .noUi-handle").first
            handle.focus()
            handle.press("End")
            page.wait_for_function(
                "(old) => { const e = document.querySelector('.fk-bpp'); return e && e.innerText !== old; }",
                arg=bpp_before, timeout=120_000,
            )
            page.wait_for_function(
                "(old) => { const e = document.querySelector('.fk-reconstruction'); return e && e.src !== old; }",
                arg=src_before, timeout=60_000,
            )
            bpp_after = _text(page, ".fk-bpp")
            page.screenshot(path=str(ARTIFACTS / "browser_explorer_after.png"), full_page=True)

            def value(text: str) -> float:
                return float(text.split("bpp")[0].strip())

            assert value(bpp_after) > value(bpp_before), (bpp_before, bpp_after)
            assert page.locator(".fk-reconstruction").first.get_attribute("src") != src_before
            assert "PSNR" in _text(page, ".fk-psnr")
            assert "identity" in _text(page, ".fk-identity")
        finally:
            browser.close()
