"""One module per notebook: its validated `Config` and the orchestration the notebook calls.

Notebook `notebooks/NN_name.py` pairs with module `lib.studies.name` (its `Config` class), so adding a chapter
needs no registration. `python -m lib.run` uses this to validate parameters before starting a kernel.
"""
import importlib

from lib.paths import NOTEBOOKS_DIR

# Execution order: the data and base-model pages first, then the chapters, the synthesis last.
NOTEBOOKS = {p.stem: p.stem.split("_", 1)[1] for p in sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"),
                                                               key=lambda p: (p.stem != "00_data", p.stem))}


# What each notebook needs built first: `make book` runs them as this graph, several at once. The base models are
# trained by build steps of their own ("base:<name>", `python -m lib.studies.base_models build <name>`), so each
# chapter starts as soon as the one base it needs is in the cache, while the others still train.
CHAPTERS = ("01_lin", "02_zhao", "03_prakash", "04_tzach", "05_horn")
BASE_OF = {"01_lin": "gpt", "02_zhao": "gpt", "03_prakash": "gpt", "04_tzach": "bert", "05_horn": "one_layer"}
BUILDS = tuple(f"base:{name}" for name in ("bert", "gpt", "one_layer"))  # longest first
AFTER = {"00_data": (), **dict.fromkeys(BUILDS, ("00_data",)), "00_base_models": BUILDS,
         **{ch: (f"base:{BASE_OF[ch]}",) for ch in CHAPTERS},
         "06_synthesis": CHAPTERS, "07_scorecard": ("00_base_models", "06_synthesis"), "08_performance": ("07_scorecard",)}


# Which ready step starts first when no earlier build's timings say how long each takes: the longest ones
# (measured in earlier builds), so that the critical path starts early.
LONGEST_FIRST = ("03_prakash", "base:bert", "02_zhao", "05_horn", "04_tzach", "base:gpt", "base:one_layer",
                 "06_synthesis", "01_lin")


def prerequisites(node: str, present=None) -> tuple[str, ...]:
    """What must finish before `node` starts (a notebook not in AFTER waits for all before it). With `present`
    (the nodes of this run), a prerequisite that is not run stands in for its own prerequisites."""
    if node in AFTER:
        direct = AFTER[node]
    else:
        order = list(NOTEBOOKS)
        direct = tuple(order[:order.index(node)]) if node in order else ()
    if present is None:
        return direct
    out = []
    for p in direct:
        out += [p] if p in present else [q for q in prerequisites(p, present) if q not in out]
    return tuple(dict.fromkeys(out))


def config_class(notebook: str):
    """The `Config` class of a notebook, e.g. `config_class("00_data")`."""
    from lib.config import ConfigError

    if notebook not in NOTEBOOKS:
        raise ConfigError(f"unknown notebook {notebook!r}: choose one of {', '.join(NOTEBOOKS)}")
    return importlib.import_module(f"lib.studies.{NOTEBOOKS[notebook]}").Config
