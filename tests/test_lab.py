"""`make lab`: JupyterLab serves the chapters offline, and Jupytext pairs each .py with an .ipynb on save."""
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from lib.paths import NOTEBOOKS_DIR, ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(tmp_path):
    pytest.importorskip("jupyterlab")
    root = tmp_path / "notebooks"
    root.mkdir()
    shutil.copy(NOTEBOOKS_DIR / "00_data.py", root)
    shutil.copy(NOTEBOOKS_DIR / "jupytext.toml", root)
    port, token = _free_port(), "test-token"
    cmd = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--ServerApp.root_dir={root}", f"--IdentityProvider.token={token}", "--LabApp.news_url=None",
           "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
           "--allow-root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not answer within 60 s")
        yield base, token, root
    finally:
        proc.terminate()
        proc.wait(20)


def _api(base, token, path, method="GET", body=None):
    req = urllib.request.Request(f"{base}/api/contents/{path}?token={token}", method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())


def test_lab_lists_the_chapters_as_notebooks_and_pairs_on_save(lab):
    base, token, root = lab
    listing = {e["name"]: e["type"] for e in _api(base, token, "")["content"]}
    assert listing.get("00_data.py") == "notebook"  # Jupytext opens the .py as a notebook
    nb = _api(base, token, "00_data.py")
    assert any("parameters" in c["metadata"].get("tags", []) for c in nb["content"]["cells"])
    _api(base, token, "00_data.py", "PUT", {"type": "notebook", "format": "json", "content": nb["content"]})
    assert (root / "00_data.ipynb").exists()  # the paired notebook appears on save


def test_paired_notebooks_are_ignored_by_git():
    res = subprocess.run(["git", "check-ignore", "-q", "notebooks/01_lin.ipynb"], cwd=ROOT)
    assert res.returncode == 0
