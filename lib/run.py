"""Execute notebooks with papermill and stage the book.

    python -m lib.run book --profile tiny                  # every notebook into book/notebooks/ (make book)
    python -m lib.run one 01_lin --profile smoke --set n_seeds=2 --params my.yaml   # into runs/ (make run)
    python -m lib.run check 01_lin --profile smoke --set n_seeds=-1                 # validate only
    python -m lib.run stage _build/smoke --notebooks _build/smoke-nb               # a book tree to build

Parameters are validated (`lib.config`) before any kernel starts, so a bad value fails in seconds with one
line. Notebooks are Jupytext percent-format `.py` files; papermill gets them converted in memory. Each run's
`results/*.json` go beside its executed notebooks (`STUDY_RESULTS`), so a custom run never touches the book.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

from lib.config import ConfigError, parse_set, read_params_file
from lib.paths import NOTEBOOKS_DIR, ROOT
from lib.studies import NOTEBOOKS, config_class

BOOK_NOTEBOOKS = ROOT / "book" / "notebooks"
BOOK_FILES = ("_config.yml", "_toc.yml", "book")


def validate(notebook: str, profile: str, params: dict):
    """The notebook's resolved Config; raises ConfigError with a one-line message."""
    return config_class(notebook).load(profile, params)


def execute(notebook: str, profile: str, params: dict, out_dir: Path, timeout: int | None = None) -> float:
    """Run one notebook through papermill into `out_dir/<notebook>.ipynb`; returns the wall time in seconds."""
    import jupytext
    import papermill

    validate(notebook, profile, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["STUDY_RESULTS"] = str((out_dir / "results").resolve())
    nb = jupytext.read(NOTEBOOKS_DIR / f"{notebook}.py")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    start = time.perf_counter()
    papermill.execute_notebook(nb, str(out_dir / f"{notebook}.ipynb"), parameters={"profile": profile, "params": params},
                               kernel_name="python3", cwd=str(NOTEBOOKS_DIR), progress_bar=False,
                               execution_timeout=timeout, log_output=False)
    return time.perf_counter() - start


def run_many(notebooks, profile: str, out_dir: Path, timeout: int | None = None) -> dict[str, float]:
    for nb in notebooks:  # validate every notebook's profile first: fail before hours of work
        validate(nb, profile, {})
    times = {}
    timings = out_dir / "timings.json"  # rewritten after each notebook: later pages (the appendix) read it
    timings.unlink(missing_ok=True)
    for nb in notebooks:
        print(f"[{profile}] {nb} ...", flush=True)
        times[nb] = execute(nb, profile, {}, out_dir, timeout)
        print(f"[{profile}] {nb} done in {times[nb]:.1f} s", flush=True)
        timings.write_text(json.dumps({"profile": profile, "seconds": times}, indent=1))
    return times


def stage(dest: Path, notebooks_dir: Path) -> Path:
    """A self-contained book tree at `dest` (config, prose pages) whose executed notebooks come from `notebooks_dir`."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "book", dest / "book", ignore=shutil.ignore_patterns("notebooks", "_build"))
    shutil.copytree(notebooks_dir, dest / "book" / "notebooks")
    return dest


def _params_from(args) -> dict:
    params = read_params_file(args.params) if args.params else {}
    params.update(parse_set(args.set or []))
    return params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.run", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("book", help="execute every notebook into a folder")
    b.add_argument("--profile", default="tiny")
    b.add_argument("--out", default=str(BOOK_NOTEBOOKS))
    b.add_argument("--timeout", type=int, default=None, help="per-cell timeout in seconds")
    for name in ("one", "check"):
        p = sub.add_parser(name, help="execute one notebook" if name == "one" else "validate parameters only")
        p.add_argument("notebook", help="one of: " + ", ".join(NOTEBOOKS))
        p.add_argument("--profile", default="tiny")
        p.add_argument("--params", help="YAML file of parameter overrides")
        p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="parameter overrides, values as YAML")
        p.add_argument("--out", default=None, help="output folder (default runs/<notebook>-<profile>-<hash>)")
    s = sub.add_parser("stage", help="assemble a book tree around a folder of executed notebooks")
    s.add_argument("dest")
    s.add_argument("--notebooks", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "book":
            run_many(list(NOTEBOOKS), args.profile, Path(args.out), args.timeout)
        elif args.cmd == "stage":
            print(stage(Path(args.dest), Path(args.notebooks)))
        else:
            nb = args.notebook.removesuffix(".py").removesuffix(".ipynb").split("/")[-1]
            params = _params_from(args)
            cfg = validate(nb, args.profile, params)
            if args.cmd == "check":
                print(f"{nb} [{args.profile}]: parameters OK")
                print(cfg.table().to_string())
                return 0
            tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
            out = Path(args.out or ROOT / "runs" / f"{nb}-{args.profile}-{tag}")
            seconds = execute(nb, args.profile, params, out)
            print(f"wrote {out / (nb + '.ipynb')} in {seconds:.1f} s (results in {out / 'results'})")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # papermill's error names the failing cell; keep the message short
        if type(e).__name__ == "PapermillExecutionError":
            print(f"error: a cell failed: {e.ename}: {e.evalue}", file=sys.stderr)
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
