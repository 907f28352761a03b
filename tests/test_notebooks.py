"""Every notebook, executed through papermill in the smoke profile with the network blocked (the book's smoke
build reuses these outputs), and run a second time from scratch to check that its results are deterministic."""
import json
import math
import re

import pytest

from lib.paths import ROOT
from lib.run import execute
from lib.studies import NOTEBOOKS

OUT = ROOT / "_build" / "smoke" / "notebooks"
AGAIN = ROOT / "_build" / "smoke-again"
TIMING = re.compile(r"second|time|per_s|_s$|wall|tokens/s", re.I)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("STUDY_BLOCK_NETWORK", "1")  # the kernel inherits it; lib then refuses non-loopback sockets
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def errors_in(path):
    nb = json.loads(path.read_text())
    return [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
            if o.get("output_type") == "error"]


def same(a, b, rel=1e-4) -> bool:
    """Equal up to floating-point reduction order (bf16 kernels may differ in the last bits between runs)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, float) or isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return abs(a - b) <= rel * max(abs(a), abs(b), 1e-8)
    return a == b


def without_timings(obj):
    if isinstance(obj, dict):
        return {k: without_timings(v) for k, v in obj.items() if not TIMING.search(str(k))}
    if isinstance(obj, list):
        return [without_timings(v) for v in obj]
    return obj


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_notebook_runs_in_smoke_profile(notebook):
    execute(notebook, "smoke", {}, OUT, timeout=900)
    assert not errors_in(OUT / f"{notebook}.ipynb")
    assert list((OUT / "results").glob("*.json")), "every notebook writes its results/*.json"


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", [nb for nb in NOTEBOOKS if nb != "00_data"])
def test_notebook_results_are_deterministic(notebook):
    """Recompute the notebook's own artifacts with the same seed: identical results/*.json (timings aside)."""
    first = {p.name: p.read_text() for p in (OUT / "results").glob("*.json")}
    if not first:
        pytest.skip("runs after test_notebook_runs_in_smoke_profile")
    execute(notebook, "smoke", {"recompute": True}, AGAIN / notebook, timeout=900)
    for path in (AGAIN / notebook / "results").glob("*.json"):
        again, before = (without_timings(json.loads(text)) for text in (path.read_text(), first[path.name]))
        assert same(again, before), f"{path.name} differs between two runs with the same seed"
