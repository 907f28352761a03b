"""One module per notebook: its validated `Config` and the orchestration the notebook calls.

Notebook `notebooks/NN_name.py` pairs with module `lib.studies.name` (its `Config` class), so adding a chapter
needs no registration. `python -m lib.run` uses this to validate parameters before starting a kernel.
"""
import importlib

from lib.paths import NOTEBOOKS_DIR

# Execution order: the data and base-model pages first, then the chapters, the synthesis last.
NOTEBOOKS = {p.stem: p.stem.split("_", 1)[1] for p in sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"),
                                                               key=lambda p: (p.stem != "00_data", p.stem))}


# What each notebook needs built first: `make book` runs them as this graph, several at once. The five chapters
# need only the base models (each trains its own models through the cache), so they run side by side.
CHAPTERS = ("01_lin", "02_zhao", "03_prakash", "04_tzach", "05_horn")
AFTER = {"00_data": (), "00_base_models": ("00_data",), **dict.fromkeys(CHAPTERS, ("00_base_models",)),
         "06_synthesis": CHAPTERS, "07_scorecard": ("06_synthesis",), "08_performance": ("07_scorecard",)}


def prerequisites(notebook: str) -> tuple[str, ...]:
    """The notebooks that must finish before `notebook` starts (a notebook not in AFTER waits for all before it)."""
    if notebook in AFTER:
        return AFTER[notebook]
    order = list(NOTEBOOKS)
    return tuple(order[:order.index(notebook)])


def config_class(notebook: str):
    """The `Config` class of a notebook, e.g. `config_class("00_data")`."""
    from lib.config import ConfigError

    if notebook not in NOTEBOOKS:
        raise ConfigError(f"unknown notebook {notebook!r}: choose one of {', '.join(NOTEBOOKS)}")
    return importlib.import_module(f"lib.studies.{NOTEBOOKS[notebook]}").Config
