"""Notebook 08_performance: speed and memory of the study, measured in the build that renders the page.

Three sources, each labelled on the page: (1) the wall time of every notebook of this build, which
`lib.run.run_many` records in `timings.json` beside the executed notebooks; (2) micro-benchmarks run here and now
(`lib.bench`): the training loop against a bare PyTorch loop, a full per-head patching sweep against its
forward-pass lower bound, linear CKA and SAE feature correlations at the sizes of the profile; (3) the report of the
last `make bench` (cold and warm caches, peak memory), if one exists, with its date and machine.
Ratios travel between machines; absolute times do not.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import bench
from lib.config import Config as _Config, param
from lib.paths import ROOT, results_dir


@dataclass(frozen=True)
class Config(_Config):
    notebook = "08_performance"
    train_steps: int = param(30, lo=2, hi=10_000, doc="steps of each loop in the training-loop overhead benchmark")
    sweep_batch: int = param(32, lo=1, hi=4096, doc="prompts in the patching-sweep benchmark")
    cka_n: int = param(10_000, lo=10, hi=10**6, doc="rows of the CKA benchmark")
    cka_d: int = param(1024, lo=2, hi=65_536, doc="columns of the CKA benchmark")
    sae_features: int = param(16_384, lo=16, hi=65_536, doc="features per SAE in the feature-correlation benchmark")
    sae_tokens: int = param(4_096, lo=16, hi=10**6, doc="tokens in the feature-correlation benchmark")
    bench_report: str = param("bench/report.json", doc="report of the last `make bench` to show (if it exists)")


def build_timings() -> pd.DataFrame | None:
    """Wall time of each notebook executed before this one in the same build (None when run on its own)."""
    path = results_dir().parent / "timings.json"
    if not path.exists():
        return None
    t = json.loads(path.read_text())
    df = pd.DataFrame({"seconds": t["seconds"]}).rename_axis("notebook or build step")
    df["minutes"] = (df["seconds"] / 60).round(2)
    if t.get("peak_mb"):
        df["peak MB"] = pd.Series(t["peak_mb"])
    df.attrs["profile"], df.attrs["jobs"] = t["profile"], t.get("jobs", 1)
    return df.round(1)


def micro(cfg: Config) -> dict:
    return {"machine": bench.machine(),
            "train_loop": bench.train_loop_overhead(cfg.train_steps),
            "patching_sweep": bench.patching_sweep(cfg.sweep_batch),
            "analysis": bench.analysis_kernels(cfg.sae_features, cfg.sae_tokens, cfg.cka_n, cfg.cka_d)}


def ratio_table(m: dict) -> pd.DataFrame:
    rows = [{"benchmark": "training loop / bare PyTorch loop (tokens/s)", "setting": m["train_loop"]["model"],
             "ratio": m["train_loop"]["loop_over_bare"], "goal": m["train_loop"]["goal"]},
            {"benchmark": "patching sweep / forward-pass lower bound (wall)", "setting": m["patching_sweep"]["model"],
             "ratio": m["patching_sweep"]["sweep_over_lower_bound"], "goal": m["patching_sweep"]["goal"]},
            {"benchmark": "patching sweep / lower bound (CPU time)", "setting": m["patching_sweep"]["model"],
             "ratio": m["patching_sweep"]["cpu_time_ratio"], "goal": "<= 1.5"}]
    return pd.DataFrame(rows).set_index("benchmark")


def kernel_table(m: dict) -> pd.DataFrame:
    rows = [{"kernel": k, **v} for k, v in m["analysis"].items()]
    return pd.DataFrame(rows).set_index("kernel")


def last_bench(cfg: Config) -> tuple[dict | None, pd.DataFrame | None]:
    """(the report's header, a notebook x profile x cache table) of the last `make bench`, or (None, None)."""
    path = Path(cfg.bench_report)
    path = path if path.is_absolute() else ROOT / path
    if not path.exists():
        return None, None
    rep = json.loads(path.read_text())
    rows = []
    for profile, nbs in rep.get("notebooks", {}).items():
        for nb, states in nbs.items():
            for state, v in states.items():
                rows.append({"profile": profile, "notebook": "whole book" if nb == "_all" else nb, "cache": state,
                             "seconds": v.get("seconds"), "peak RSS (MiB)": v.get("peak_rss_mib"),
                             "error": "; ".join(v.get("error", []))})
    table = None
    if rows:  # one row per notebook, columns (profile, cache, measure)
        long = pd.DataFrame(rows)
        if not long["error"].astype(bool).any():
            long = long.drop(columns="error")
        table = long.pivot_table(index="notebook", columns=["profile", "cache"], aggfunc="first", sort=False)
        table = table.reorder_levels([1, 2, 0], axis=1).sort_index(axis=1, level=[0, 1], sort_remaining=False)
    keep = ("date", "machine", "local_model_loads", "precision", "base_throughput", "compile")
    return {k: rep[k] for k in keep if k in rep}, table


def precision_table(header: dict | None) -> pd.DataFrame | None:
    """One tiny-GPT training step in fp32 and bf16 autocast at 1 thread and every core (last `make bench`)."""
    prec = (header or {}).get("precision")
    if not prec:
        return None
    return pd.Series(prec["step_s"], name="seconds per step").rename_axis("precision, threads").to_frame()


def throughput_table(header: dict | None) -> pd.DataFrame | None:
    """Each base model's training throughput and its share of the fp32 GEMM peak (last `make bench`)."""
    rows = (header or {}).get("base_throughput")
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("base model") if rows else None


def local_loads_table(header: dict | None) -> pd.DataFrame | None:
    """The packaged models' load times of the last `make bench` (from GGUF, from the fp32 cache), if measured."""
    loads = (header or {}).get("local_model_loads")
    if not loads:
        return None
    return pd.DataFrame.from_dict(loads, orient="index").rename_axis("packaged model")


# ------------------------------------------------------------------------------- computed sentences (Markdown)
def timings_text(timings):
    from lib import page

    if timings is None:
        return page.md("No `timings.json` beside this notebook: it was executed on its own (as the tests do), not by "
                       "`make book`, so there are no build timings to show.")
    return page.md(f"Profile `{timings.attrs['profile']}`, up to {timings.attrs['jobs']} at a time: the "
                   f"{len(timings)} notebooks and build steps before this page took "
                   f"{timings['seconds'].sum() / 60:.1f} min added up (cached models reused where their keys matched). "
                   "Peak memory is the resident memory of each one's processes (kernel and workers), sampled by the "
                   "runner.")


def micro_text(m: dict):
    from lib import page

    return page.md(f"Measured now on {m['machine']['cores']} cores ({m['machine']['cpu']}). The training loop runs at "
                   f"{m['train_loop']['loop_over_bare']:.2f}× the tokens/s of a bare forward/backward/step loop on the "
                   f"same model and batch (goal ≥ 0.8); a full per-head patching sweep costs "
                   f"{m['patching_sweep']['sweep_over_lower_bound']:.2f}× the forward passes any per-head patching "
                   f"must compute (goal ≤ 1.5).")


def bench_text(header: dict | None, cfg: Config):
    from lib import page

    if header is None:
        return page.md(f"No `{cfg.bench_report}` on this machine: run `make bench` to measure every notebook with a "
                       "cold and a warm cache.")
    return page.md(f"Report of `make bench` from {header.get('date')} on {header['machine']['cores']} cores "
                   f"({header['machine']['cpu']}): not re-measured in this build. Wall time in seconds and peak memory "
                   "of each notebook's kernel, with an empty cache (cold: every model trained) and with the cache that "
                   "run left (warm).")


def loads_text(loads):
    from lib import page

    if loads is None:
        return None
    return page.md("Load times of the `local` profile's packaged models in that run (seconds): the first load "
                   "dequantises the GGUF file and writes the fp32 cache; later loads read the cache, split into the "
                   "weights and the tokenizer.")


def precision_text(header: dict | None):
    from lib import page

    if not header or "precision" not in header:
        return None
    p = header["precision"]
    return page.md(f"That machine {'runs' if p['native_bf16'] else 'has no'} native bf16, so `auto` resolved to "
                   f"{p['auto_resolves_to']}.")


def compile_text(header: dict | None):
    from lib import page

    comp = (header or {}).get("compile")
    if not comp:
        return None
    if "error" in comp:
        return page.md(f"torch.compile of the same training step: {comp}")
    return page.md(f"torch.compile of the same training step (one thread, fp32): {comp['compiled_step_s']} s a step "
                   f"against {comp['eager_step_s']} s eager ({comp['speedup']}x), after a first step of "
                   f"{comp['first_step_with_compile_s']} s that includes compiling.")
