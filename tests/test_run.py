"""The runner: bad parameters rejected before a kernel starts (one line, exit code 2); the book as a graph of
notebooks run side by side, with progress, failures marked and dependents skipped."""
import json
import os
import subprocess
import sys

import pytest

from lib.paths import ROOT


@pytest.mark.parametrize("args, words", [
    (["--profile", "huge"], "unknown profile 'huge'"),
    (["--set", "max_chars=-1"], "'max_chars' = -1 is out of range"),
    (["--set", "bogus=1"], "unknown parameter 'bogus'"),
    (["--set", "max_chars=lots"], "wrong type"),
])
def test_cli_rejects_bad_parameters(args, words):
    res = subprocess.run([sys.executable, "-m", "lib.run", "one", "00_data", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0]


def test_cli_unknown_notebook():
    res = subprocess.run([sys.executable, "-m", "lib.run", "check", "nope"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "unknown notebook 'nope'" in res.stderr


def test_stage_assembles_a_book_tree(tmp_path):
    from lib.run import stage

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    (nbs / "00_data.ipynb").write_text("{}")
    dest = stage(tmp_path / "book", nbs)
    assert (dest / "_toc.yml").exists() and (dest / "book/intro.md").exists()
    assert (dest / "book/notebooks/00_data.ipynb").exists()


# --------------------------------------------------------------------------- the parallel book runner
from lib import run as runner  # noqa: E402
from lib.chapters import AFTER, BUILDS, CHAPTERS, NOTEBOOKS, prerequisites  # noqa: E402


def test_graph_covers_every_notebook_and_has_no_cycle():
    nodes = set(NOTEBOOKS) | set(BUILDS)
    assert set(AFTER) == nodes
    done = set()
    for _ in nodes:  # a topological sweep must reach every node
        done |= {nb for nb in nodes if set(prerequisites(nb)) <= done}
    assert done == nodes
    assert prerequisites("01_lin") == ("base:gpt",) and prerequisites("04_tzach") == ("base:bert",)
    assert set(prerequisites("06_synthesis")) == set(CHAPTERS)


def test_a_step_left_out_stands_in_for_its_own_prerequisites():
    """Without the build steps (a profile that trains no bases, or `make run`), a chapter still waits for the data."""
    assert prerequisites("01_lin", {"00_data", "01_lin"}) == ("00_data",)
    assert prerequisites("00_base_models", {"00_data", "00_base_models"}) == ("00_data",)
    assert runner.book_nodes("tiny")[:3] == list(BUILDS) and runner.book_nodes("local") == list(NOTEBOOKS)


def test_kernels_import_this_checkout_first():
    env = runner.kernel_env({"PYTHONPATH": f"/elsewhere/checkout{os.pathsep}{ROOT}"})
    assert env["PYTHONPATH"].split(os.pathsep) == [str(ROOT), "/elsewhere/checkout"]


def test_longest_ready_notebook_starts_first():
    previous = {"01_lin": 10.0, "03_prakash": 300.0, "02_zhao": 100.0}
    assert runner._order(["01_lin", "02_zhao", "03_prakash"], previous) == ["03_prakash", "02_zhao", "01_lin"]
    assert runner._order(["01_lin", "base:one_layer", "03_prakash"], {})[0] == "03_prakash"  # a fresh clone


def test_a_step_with_a_long_chain_after_it_goes_first():
    """A short step whose dependent is long (one_layer -> 05_horn) starts before a longer one with nothing after it."""
    nodes = ["base:one_layer", "04_tzach", "05_horn"]
    previous = {"base:one_layer": 100.0, "04_tzach": 300.0, "05_horn": 700.0}
    assert runner._order(["base:one_layer", "04_tzach"], previous, nodes) == ["base:one_layer", "04_tzach"]


@pytest.fixture
def fake_jobs(monkeypatch):
    """Jobs that sleep, print progress, and fail where told, instead of running papermill."""
    def install(seconds: float = 0.0, fail=()):
        def command(notebook, profile, params, out_dir, timeout):
            code = ("import os, sys, time; from lib import progress; progress.stage('working'); "
                    f"time.sleep({seconds}); bad = {notebook!r} in {tuple(fail)!r}; "
                    "print('error: cell 3 (x = 1 / 0) raised ZeroDivisionError: division by zero' if bad else 'ok'); "
                    "sys.exit(1 if bad else 0)")
            return [sys.executable, "-c", code]
        monkeypatch.setattr(runner, "_command", command)
        monkeypatch.setattr(runner, "check_sources", lambda *a: None)  # the live sources: tested on their own
    return install


def test_independent_notebooks_run_side_by_side(tmp_path, fake_jobs, capsys):
    fake_jobs(seconds=1.5)
    result = runner.run_graph(["01_lin", "02_zhao"], "smoke", tmp_path, jobs=2, poll=0.05)
    assert set(result.seconds) == {"01_lin", "02_zhao"} and not result.failed
    assert result.wall < 0.8 * sum(result.seconds.values())  # together, not one after the other
    out = capsys.readouterr().out
    assert "01_lin          working" in out and "total" in out  # progress relayed, summary printed
    assert all(0 < mb < 400 for mb in result.peak_mb.values())  # a small python process, not the runner's size


def test_jobs_1_runs_one_at_a_time(tmp_path, fake_jobs):
    fake_jobs(seconds=0.5)
    result = runner.run_graph(["01_lin", "02_zhao"], "smoke", tmp_path, jobs=1, poll=0.05)
    assert result.wall >= sum(result.seconds.values()) - 0.2


def test_failure_is_marked_and_its_dependents_skipped(tmp_path, fake_jobs, capsys):
    fake_jobs(fail=("base:gpt",))
    nbs = ["00_data", "base:gpt", "01_lin", "06_synthesis"]
    result = runner.run_graph(nbs, "smoke", tmp_path, jobs=2, poll=0.05)
    assert list(result.seconds) == ["00_data"]
    assert "ZeroDivisionError" in result.failed["base:gpt"] and "cell 3" in result.failed["base:gpt"]
    assert sorted(result.skipped) == ["01_lin", "06_synthesis"]
    assert (tmp_path / "base:gpt.FAILED").exists()
    assert json.loads((tmp_path / "timings.json").read_text())["seconds"] == {"00_data": result.seconds["00_data"]}
    assert "FAILED" in capsys.readouterr().out


def test_bad_parameter_fails_before_any_job_starts(tmp_path, fake_jobs):
    fake_jobs()
    with pytest.raises(runner.ConfigError):
        runner.run_graph(["00_data", "01_lin"], "smoke", tmp_path, params={"max_chars": -1})
    assert not (tmp_path / ".logs").exists()


def test_timeout_and_cell_errors_are_one_line():
    class CellTimeoutError(TimeoutError):
        pass
    message = ("A cell timed out while it was being executed, after 2 seconds.\nThe message was: x.\n"
               "Here is a preview of the cell contents:\n-------------------\nimport time\ntime.sleep(20)\n"
               "-------------------\n")
    line = runner.describe_failure(CellTimeoutError(message))
    assert line.startswith("the cell (import time) ran past the per-cell timeout") and "2 seconds" in line
    assert "\n" not in runner.describe_failure(ValueError("a\nb"))


def test_a_failed_run_is_marked_and_never_sits_beside_old_results(tmp_path, fake_jobs, capsys):
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "00_data.json").write_text("{}")  # an earlier run's record
    fake_jobs(fail=("00_data",))
    assert runner.main(["one", "00_data", "--profile", "smoke", "--out", str(tmp_path)]) == 1
    assert not (tmp_path / "results" / "00_data.json").exists()
    assert "ZeroDivisionError" in (tmp_path / "00_data.FAILED").read_text()
    assert capsys.readouterr().err.startswith("error: cell 3")


# --------------------------------------------------------------------------- the offline sources, checked up front
def _fake_sources(root, damage=None):
    """A folder per package `make data` fetches, each one small file with its recorded checksum, as
    `lib.sources.fetch` leaves them; returns the path of each package's file."""
    import hashlib

    from lib import sources
    files = {}
    for pkg in sources.DEBIAN_PACKAGES:
        folder, rel = root / pkg, f"usr/share/{pkg}/data.txt"
        (folder / rel).parent.mkdir(parents=True)
        text = f"the contents of {pkg}\n".encode()
        (folder / rel).write_bytes(text)
        (folder / sources.SUMS).write_text(f"{hashlib.md5(text).hexdigest()}  {rel}\n")
        (folder / sources.UNLISTED).write_text("")
        (folder / sources.COMPLETE).write_text(f"{pkg}_1.0-1_all.deb\n")
        files[pkg] = folder / rel
    return files


def test_a_damaged_or_missing_source_stops_the_run_before_any_notebook_starts(tmp_path, monkeypatch, capsys):
    """`one` and `book` check every offline source first: a truncated file and a package never fetched are named
    in one line with `make data`, no kernel starts and an earlier run's results stay."""
    import shutil

    from lib import sources
    files = _fake_sources(tmp_path / "sources")
    monkeypatch.setattr(sources, "SOURCES_DIR", tmp_path / "sources")

    def start(nb, *args):
        raise AssertionError(f"{nb} started before its sources were checked")
    monkeypatch.setattr(runner, "_start", start)
    files["wordnet-base"].write_bytes(b"trunc")
    shutil.rmtree(tmp_path / "sources" / "dict-gcide")
    out = tmp_path / "run"
    (out / "results").mkdir(parents=True)
    (out / "results" / "01_lin.json").write_text("{}")
    assert runner.main(["one", "01_lin", "--profile", "smoke", "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: offline source(s) missing or damaged")
    assert "wordnet-base (usr/share/wordnet-base/data.txt fails its checksum" in err
    assert "dict-gcide (not fetched)" in err and "`make data`" in err
    assert "fortunes" not in err.replace("fortunes-min", "")  # an intact package is not named
    assert (out / "results" / "01_lin.json").exists()
    assert runner.main(["book", "--profile", "smoke", "--out", str(tmp_path / "book")]) == 1
    assert "dict-gcide (not fetched)" in capsys.readouterr().err
    assert not (tmp_path / "book" / ".logs").exists()


def test_intact_sources_let_the_run_start(tmp_path, monkeypatch, fake_jobs):
    from lib import sources
    _fake_sources(tmp_path / "sources")
    monkeypatch.setattr(sources, "SOURCES_DIR", tmp_path / "sources")
    check = runner.check_sources
    fake_jobs()
    monkeypatch.setattr(runner, "check_sources", check)  # the real check, on intact (fake) sources
    result = runner.run_graph(["00_data"], "smoke", tmp_path / "out", jobs=1, poll=0.05)
    assert list(result.seconds) == ["00_data"] and not result.failed
