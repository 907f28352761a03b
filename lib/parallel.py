"""Independent computations of one notebook spread over worker processes.

    parallel.run(build_one, [("gpt", cfg), ("bert", cfg)])   # build_one(*args) in up to `workers()` processes

For work whose results go through the artifact cache (a model trained and saved): the workers build, the caller
then loads what they built. `make book` tells a notebook how many cores it may use (`STUDY_WORKERS`); a notebook
opened on its own gets one worker, which runs everything in its own process. The torch threads of this process
are shared out between the workers, so the machine is never oversubscribed.
"""
from __future__ import annotations

import contextlib
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Sequence


def workers() -> int:
    """How many processes this notebook may run at once (the runner's `STUDY_WORKERS`, default 1)."""
    try:
        return max(1, int(os.environ.get("STUDY_WORKERS", "1")))
    except ValueError:
        return 1


@contextlib.contextmanager
def threads(n: int):
    """torch uses `n` threads inside the block (0: leave the count as it is), the old count after it."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _init(threads: int) -> None:
    import torch

    os.environ.pop("STUDY_THREADS_FILE", None)  # the allowance is the notebook's, not each worker's
    torch.set_num_threads(threads)


def run(fn: Callable, calls: Sequence[tuple], n_workers: int | None = None) -> list:
    """[fn(*args) for args in calls], in up to `n_workers` spawned processes (default `workers()`), in order.

    `fn` must be a module-level function and its arguments picklable. With one worker or one call, everything
    runs here. An exception in a worker is raised here.
    """
    n = min(n_workers or workers(), len(calls))
    if n <= 1:
        return [fn(*args) for args in calls]
    import torch

    threads = max(1, torch.get_num_threads() // n)
    with ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_init,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(fn, *args) for args in calls]
        return [f.result() for f in futures]
