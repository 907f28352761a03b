"""Each chapter's claims, written to `results/<chapter>.json` for the reproduction scorecard.

A claim pairs the paper's statement and number with ours (mean, spread over seeds, n) and a verdict, so the
scorecard page is generated from these files, never typed.
"""
from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from lib.claims import VERDICTS, Claim  # noqa: F401  (Claim lives in lib.claims; re-exported for old imports)
from lib.paths import results_dir


def measured(values, fmt: str = "{:.3f}") -> tuple[str, float, float, int]:
    """('m ± s (n=k)', mean, sample std, k) for a list of per-seed values."""
    v = np.asarray(values, dtype=float)
    s = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return f"{fmt.format(v.mean())} ± {fmt.format(s)} (n={len(v)})", float(v.mean()), s, len(v)


def write(chapter: str, paper: str, profile: str, models: dict, claims: list[Claim], **extra) -> dict:
    """Write results/<chapter>.json: {chapter, paper, profile, models (name -> size info), claims, ...}."""
    record = {"chapter": chapter, "paper": paper, "profile": profile, "models": models,
              "claims": [dataclasses.asdict(c) for c in claims], **extra}
    write_json(f"{chapter}.json", record)
    return record


def write_json(name: str, record: dict) -> None:
    """results/<name>, written whole and then renamed into place: never half a record."""
    path = results_dir() / name
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float))
    os.replace(tmp, path)


def read_all(folder=None) -> list[dict]:
    folder = folder or results_dir()
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if "claims" in p.read_text()[:10_000]]
