"""Where things live. Every path is resolved from the package location, never from the working directory
(papermill runs kernels in other folders). `STUDY_CACHE` and `STUDY_RESULTS` override the defaults."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = ROOT / "notebooks"
PARAMS_DIR = NOTEBOOKS_DIR / "params"
DATA_DIR = ROOT / "data"
SOURCES_DIR = DATA_DIR / "sources"  # unpacked Debian packages (see data/README.md)


def cache_dir() -> Path:
    """Root of the artifact cache: `data/cache/` unless `STUDY_CACHE` is set."""
    return Path(os.environ.get("STUDY_CACHE", DATA_DIR / "cache"))


def results_dir() -> Path:
    """Where notebooks write `results/<chapter>.json` and figures: `results/` unless `STUDY_RESULTS` is set."""
    path = Path(os.environ.get("STUDY_RESULTS", ROOT / "results"))
    path.mkdir(parents=True, exist_ok=True)
    return path
