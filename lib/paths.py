"""Where things live. Every path is resolved from the package location, never from the working directory
(papermill runs kernels in other folders). `STUDY_CACHE` and `STUDY_RESULTS` override the defaults; a relative
value is taken from the repository root (where `make` and `python -m lib...` run), not from the kernel's folder."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
PARAMS_DIR = NOTEBOOKS_DIR / "params"
DATA_DIR = ROOT / "data"
SOURCES_DIR = DATA_DIR / "sources"  # unpacked Debian packages (see data/README.md)


def _from_root(value: str) -> Path:
    return ROOT / value  # an absolute value stays as it is


def cache_dir() -> Path:
    """Root of the artifact cache: `data/cache/` unless `STUDY_CACHE` is set."""
    return _from_root(os.environ.get("STUDY_CACHE", str(DATA_DIR / "cache")))


def results_dir() -> Path:
    """Where notebooks write `results/<chapter>.json` and figures: `results/` unless `STUDY_RESULTS` is set."""
    path = _from_root(os.environ.get("STUDY_RESULTS", str(ROOT / "results")))
    path.mkdir(parents=True, exist_ok=True)
    return path
