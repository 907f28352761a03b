"""Every notebook, executed through papermill in the smoke profile (the book's smoke build reuses these)."""
import json

import pytest

from lib.paths import ROOT
from lib.run import execute
from lib.studies import NOTEBOOKS

OUT = ROOT / "_build" / "smoke" / "notebooks"


@pytest.mark.notebooks
@pytest.mark.parametrize("notebook", list(NOTEBOOKS))
def test_notebook_runs_in_smoke_profile(notebook):
    execute(notebook, "smoke", {}, OUT, timeout=900)
    nb = json.loads((OUT / f"{notebook}.ipynb").read_text())
    errors = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert list((OUT / "results").glob("*.json")), "every notebook writes its results/*.json"
