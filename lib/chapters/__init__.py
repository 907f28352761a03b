"""The study's pages, listed once: notebook -> the chapter that computes it.

A finding is a package `lib/chapters/<name>/` (config < build < measure < claims < report, imported in that order
and only by its notebook); a small page (data, base models, scorecard, appendix) is one module. A notebook's
parameters are the `Config` of `lib.chapters.<name>.config` (package) or `lib.chapters.<name>` (module):
`config_class` imports only that, so `python -m lib.run check` validates parameters without importing torch.
"""
import importlib

from lib.paths import ROOT

# Execution order: the data and base-model pages first, then the chapters, the synthesis last.
NOTEBOOKS = {"00_data": "data", "00_base_models": "base_models", "01_lin": "lin", "02_zhao": "zhao",
             "03_prakash": "prakash", "04_tzach": "tzach", "05_horn": "horn", "06_synthesis": "synthesis",
             "07_scorecard": "scorecard", "08_performance": "performance"}
# The chapters whose base -> tuned pairs the synthesis compares: each has `lib.chapters.<name>.build.synthesis_pairs`.
SYNTHESIS_SOURCES = ("lin", "zhao", "prakash", "tzach", "horn")


# What each notebook needs built first: `make book` runs them as this graph, several at once. The base models are
# trained by build steps of their own ("base:<name>", `python -m lib.bases build <name>`), so each
# chapter starts as soon as the one base it needs is in the cache, while the others still train.
CHAPTERS = ("01_lin", "02_zhao", "03_prakash", "04_tzach", "05_horn")
BASE_OF = {"01_lin": "gpt", "02_zhao": "gpt", "04_tzach": "bert", "05_horn": "one_layer"}  # 03_prakash trains its own
BUILDS = tuple(f"base:{name}" for name in ("bert", "gpt", "one_layer"))  # longest first
AFTER = {"00_data": (), **dict.fromkeys(BUILDS, ("00_data",)), "00_base_models": BUILDS,
         **{ch: (f"base:{BASE_OF[ch]}",) if ch in BASE_OF else ("00_data",) for ch in CHAPTERS},
         "06_synthesis": CHAPTERS, "07_scorecard": ("00_base_models", "06_synthesis"), "08_performance": ("07_scorecard",)}


# Rough cold cost of each step in seconds (one tiny build on a 2-core CPU), used only to order the ready steps when
# no earlier build's timings.json says how long each took: the step with the longest chain of work after it starts
# first, so that the critical path (03_prakash, which trains its own bases; one_layer -> 05_horn) is never left
# waiting.
COST_HINT = {"00_data": 10, "base:gpt": 340, "base:bert": 1000, "base:one_layer": 280, "00_base_models": 10,
             "01_lin": 200, "02_zhao": 440, "03_prakash": 5400, "04_tzach": 1200, "05_horn": 710, "06_synthesis": 130,
             "07_scorecard": 5, "08_performance": 30}


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
    name = NOTEBOOKS[notebook]
    package = (ROOT / "lib" / "chapters" / name).is_dir()
    return importlib.import_module(f"lib.chapters.{name}" + (".config" if package else "")).Config
