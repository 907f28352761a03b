"""Every notebook, executed through papermill in the smoke profile with the network blocked (the book's smoke
build reuses these outputs); then re-executed with nbval, which must reproduce the cells' own outputs (what a reader
relies on when re-running a page), and recomputed from scratch, whose results records must be identical (what
nbval cannot see: the trained models themselves are deterministic). Each recompute runs in its own snapshot of the
first run's cache, so a notebook's check rebuilds its own artifacts from exactly the upstream artifacts the first run
used, whatever the other notebooks' checks rebuilt before it."""
import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys

import pytest

from lib.paths import ROOT, cache_dir
from lib.run import execute
from lib.chapters import NOTEBOOKS, config_class

OUT = ROOT / "_build" / "smoke" / "notebooks"
AGAIN = ROOT / "_build" / "smoke-again"
TIMING = re.compile(r"second|time|tokens_per_s|_s$|wall|tokens/s", re.I)  # "per_seed" values are compared
SANITIZE = ROOT / "tests" / "nbval_sanitize.cfg"
NBVAL_SKIP = {"08_performance"}  # every output of the appendix is a timing measured now


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


def differences(a, b, where="") -> list[str]:
    """The paths at which `same(a, b)` fails (for the assertion message: the records are too long to print)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{where or '/'}: keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in differences(a[k], b[k], f"{where}/{k}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    return [] if same(a, b) else [f"{where}: {a!r} != {b!r}"[:300]]


def snapshot_cache(dest):
    """A copy of the artifact cache at `dest`, hard links where the file system allows (artifacts are never edited
    in place: a rebuild removes the folder and renames a new one in, so the originals stay as they were)."""
    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.rmtree(dest, ignore_errors=True)
    if cache_dir().exists():
        shutil.copytree(cache_dir(), dest, copy_function=link, ignore=shutil.ignore_patterns(".tmp-*", ".locks"))
    else:
        dest.mkdir(parents=True)
    return dest


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


def nbval(ipynb, results, *extra):
    """pytest --nbval on one executed notebook (a fresh kernel, the same injected parameters, the warm cache)."""
    env = {**os.environ, "STUDY_RESULTS": str(results), "STUDY_BLOCK_NETWORK": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}  # tests/ holds the nbval_stderr plugin
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "nbval_stderr", "--nbval",
                           "--nbval-sanitize-with", str(SANITIZE), "--nbval-cell-timeout", "900", "-m", "",
                           "-o", "addopts=", str(ipynb), *extra],
                          cwd=ROOT / "notebooks", env=env, capture_output=True, text=True, timeout=1800)


# Reads the first run's cache (the recompute check below rebuilds artifacts only in snapshots of it).
@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", [nb for nb in NOTEBOOKS if nb not in NBVAL_SKIP])
def test_notebook_reexecutes_to_its_own_outputs(notebook, tmp_path):
    ipynb = OUT / f"{notebook}.ipynb"
    if not ipynb.exists():
        pytest.skip("runs after test_notebook_runs_in_smoke_profile")
    shutil.copytree(OUT / "results", tmp_path / "results")  # the scorecard reads the chapters' records
    res = nbval(ipynb, tmp_path / "results")
    assert res.returncode == 0, res.stdout[-4000:]


@pytest.mark.notebooks
def test_nbval_catches_a_nondeterministic_cell(tmp_path):
    """A cell whose output changes between runs must fail the re-execution check (the check can fail)."""
    import nbformat

    src = OUT / "07_scorecard.ipynb"
    if not src.exists():
        pytest.skip("runs after test_notebook_runs_in_smoke_profile")
    nb = nbformat.read(src, as_version=4)
    cell = nbformat.v4.new_code_cell("import random\nprint(random.random())")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="0.123456789\n")]
    nb.cells.append(cell)
    broken = tmp_path / "07_scorecard.ipynb"
    nbformat.write(nb, broken)
    shutil.copytree(OUT / "results", tmp_path / "results")
    res = nbval(broken, tmp_path / "results")
    assert res.returncode != 0 and "random" in res.stdout and "1 failed" in res.stdout  # that cell, and only it



@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", [nb for nb in NOTEBOOKS if nb != "00_data"])
def test_notebook_results_are_deterministic(notebook, monkeypatch):
    """Recompute the notebook's own artifacts with the same seed: identical results/*.json (timings aside)."""
    first = {p.name: p.read_text() for p in (OUT / "results").glob("*.json")}
    if not first:
        pytest.skip("runs after test_notebook_runs_in_smoke_profile")
    # the upstream artifacts exactly as the first run read them (an earlier notebook's check may have rebuilt them)
    snapshot = snapshot_cache(AGAIN / notebook / "cache")
    monkeypatch.setenv("STUDY_CACHE", str(snapshot.resolve()))
    params = {"recompute": True}
    if "results" in {f.name for f in dataclasses.fields(config_class(notebook))}:
        params["results"] = str(OUT / "results")  # pages that read the chapters' records read the first run's
    execute(notebook, "smoke", params, AGAIN / notebook, timeout=900)
    for path in (AGAIN / notebook / "results").glob("*.json"):
        again, before = (without_timings(json.loads(text)) for text in (path.read_text(), first[path.name]))
        diff = differences(again, before)
        assert not diff, f"{path.name} differs between two runs with the same seed at {len(diff)} place(s): " + "; ".join(diff[:12])
    shutil.rmtree(snapshot, ignore_errors=True)
