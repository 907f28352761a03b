"""Every Config parameter is a papermill parameter: the notebooks' parameters cells are generated from the Configs
(so the two cannot drift), and a name injected that is not a parameter stops the run before any work."""
import json
import subprocess
import sys

import pytest

from lib.config import ConfigError, sync_parameters_cells
from lib.paths import NOTEBOOKS_DIR, ROOT
from lib.chapters import NOTEBOOKS, config_class


def test_every_parameters_cell_is_the_generated_one():
    assert sync_parameters_cells(write=False) == [], "run: python -m lib.config sync"


@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_parameters_cell_lists_every_field_with_its_doc(notebook):
    cls = config_class(notebook)
    cell = cls.parameters_cell()
    names = [ln.split(" = ")[0] for ln in cell.splitlines() if " = " in ln and not ln.startswith("#")]
    assert names == ["profile", "params", *[n for n in cls.field_names() if n != "profile"]]
    namespace = {}
    exec(cell, namespace)  # the cell is valid Python whose values mean "the profile's"
    assert cls.from_namespace(namespace) == cls.load("tiny")


@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_nothing_but_imports_comes_between_the_parameters_and_their_check(notebook):
    """from_namespace reads the kernel's globals: a plain value assigned before it would pass for a parameter."""
    text = (NOTEBOOKS_DIR / f"{notebook}.py").read_text()
    cell = text.split('# %% tags=["parameters"]', 1)[1].split("# %%", 2)[1]
    before = cell.split("from_namespace", 1)[0].splitlines()[1:-1]
    assert all(ln.startswith(("import ", "from ")) or not ln.strip() or ln.startswith("#") for ln in before), before


def test_single_parameters_override_the_profile_and_params():
    cls = config_class("01_lin")
    ns = {"profile": "smoke", "params": {"n_seeds": 3, "seed": 4}, "n_seeds": 2, "seed": None}
    cfg = cls.from_namespace(ns)
    assert (cfg.n_seeds, cfg.seed, cfg.profile) == (2, 4, "smoke")


@pytest.mark.parametrize("ns, words", [
    ({"profile": "smoke", "profle": "smoke"}, "unknown parameter 'profle'"),
    ({"profile": "smoke", "max_chars": 50000}, "unknown parameter 'max_chars'"),  # a parameter of another notebook
    ({"profile": "smoke", "params": [1, 2]}, "must be a mapping"),
    ({"profile": "smoke", "n_seeds": 0}, "'n_seeds' = 0 is out of range"),
])
def test_bad_injected_values_are_one_error(ns, words):
    with pytest.raises(ConfigError, match=words):
        config_class("01_lin").from_namespace({"In": [], "Out": {}, "_": "", **ns})


def test_modules_and_functions_in_the_namespace_are_not_parameters():
    import lib.plotting

    ns = {"profile": "smoke", "plotting": lib.plotting, "f": print}
    assert config_class("01_lin").from_namespace(ns).profile == "smoke"


def _papermill(notebook: str, tmp_path, *args):
    ipynb = tmp_path / f"{notebook}.ipynb"
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", "-o", str(ipynb),
                    str(NOTEBOOKS_DIR / f"{notebook}.py")], check=True, capture_output=True)
    return subprocess.run([sys.executable, "-m", "papermill", str(ipynb), str(tmp_path / "out.ipynb"), "--cwd",
                           str(NOTEBOOKS_DIR), "-k", "python3", *args], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env={**__import__("os").environ, "STUDY_RESULTS": str(tmp_path / "results")})


@pytest.mark.notebooks
def test_raw_papermill_parameters_change_the_run_and_typos_stop_it(tmp_path):
    ok = _papermill("00_data", tmp_path, "-p", "profile", "smoke", "-p", "max_chars", "50000")
    assert ok.returncode == 0, ok.stderr[-2000:]
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    tables = ["".join(o["data"]["text/plain"]) for c in nb["cells"] for o in c.get("outputs", [])
              if "recompute" in "".join(o.get("data", {}).get("text/plain", ""))]
    assert any(ln.split()[:2] == ["max_chars", "50000"] for ln in tables[0].splitlines())  # papermill's value won
    bad = _papermill("07_scorecard", tmp_path, "-p", "profile", "smoke", "-p", "not_a_param", "1")
    assert bad.returncode != 0 and "unknown parameter 'not_a_param'" in bad.stderr + bad.stdout


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_help_notebook_lists_every_parameter(notebook, tmp_path):
    ipynb = tmp_path / "nb.ipynb"
    subprocess.run([sys.executable, "-m", "jupytext", "--to", "ipynb", "-o", str(ipynb),
                    str(NOTEBOOKS_DIR / f"{notebook}.py")], check=True, capture_output=True)
    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(ipynb)], capture_output=True,
                         text=True, timeout=120).stdout
    for name in config_class(notebook).field_names():
        assert f"  {name}:" in out, name


def test_every_figure_reference_names_a_figure_of_the_book():
    """A {numref} to a figure label no notebook defines breaks the book build (-W): catch it before the build."""
    import re

    from lib.paths import NOTEBOOKS_DIR, ROOT

    texts = [p.read_text() for p in sorted(NOTEBOOKS_DIR.glob("*.py"))] + \
            [p.read_text() for p in sorted((ROOT / "book").glob("*.md"))]
    labels = {m for t in texts for m in re.findall(r'"name": "(fig-[\w-]+)"', t)}
    refs = {m for t in texts for m in re.findall(r"\{numref\}`(fig-[\w-]+)`", t)}
    assert refs <= labels, f"references to undefined figures: {sorted(refs - labels)}"
