"""06_synthesis, parameters: which chapters, which CKA rows, how the lenses are read. No verdict thresholds here:
they are constants of `claims.py`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lib.chapters import NOTEBOOKS, SYNTHESIS_SOURCES
from lib.config import Config as _Config, ConfigError, param
from lib.paths import ROOT

CHAPTER = "06_synthesis"
SOURCES = tuple(nb for nb, module in NOTEBOOKS.items() if module in SYNTHESIS_SOURCES)  # notebook order


@dataclass(frozen=True)
class Config(_Config):
    notebook = CHAPTER
    chapters: tuple[str, ...] = param((), choices=SOURCES, doc="notebooks whose pairs to include (empty: all)")
    tokens: str = param("readout", choices=("readout", "all"),
                        doc="CKA rows: the positions the metric reads, or every non-padding token")
    debiased: bool = param(True, doc="unbiased HSIC in CKA (the biased one is inflated when rows ~ d_model)")
    min_gap: float = param(0.02, lo=0.0, hi=1.0,
                           doc="recovery is NaN when |metric(tuned) - metric(base)| is below this")
    recovery_level: float = param(0.5, lo=0.0, hi=1.0, doc="the table reports where recovery first exceeds this")
    chunk: int = param(64, lo=1, hi=4096, doc="examples per forward pass when reading activations")
    n_seeds: int = param(3, lo=1, hi=20, doc="seeds per pair: each chapter's first n_seeds (fewer where it has fewer)")
    results: str = param("", doc="folder of the chapters' results/*.json (their own verdicts gate the synthesis); "
                                 "empty: this run's results folder, then the book's")

    def validate(self):
        if self.results and not self.results_folder().is_dir():
            raise ConfigError(f"parameter 'results' = {self.results!r} is not a folder: point it at a results folder "
                              "written by a build, e.g. book/notebooks/results")

    def results_folder(self) -> Path | None:
        if not self.results:
            return None
        p = Path(self.results)
        return p if p.is_absolute() else ROOT / p
