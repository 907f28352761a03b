"""One module per notebook: its validated `Config` and the orchestration the notebook calls.

`NOTEBOOKS` maps each notebook (in book order) to its module here; `python -m lib.run` uses it to validate
parameters before starting a kernel.
"""
import importlib

NOTEBOOKS = {
    "00_data": "data",
}


def config_class(notebook: str):
    """The `Config` class of a notebook, e.g. `config_class("00_data")`."""
    from lib.config import ConfigError

    if notebook not in NOTEBOOKS:
        raise ConfigError(f"unknown notebook {notebook!r}: choose one of {', '.join(NOTEBOOKS)}")
    return importlib.import_module(f"lib.studies.{NOTEBOOKS[notebook]}").Config
