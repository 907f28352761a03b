"""The runner rejects bad parameters before starting a kernel, with one line and exit code 2."""
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
