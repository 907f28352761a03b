"""Each chapter's claims, written to `results/<chapter>.json` for the reproduction scorecard.

A claim pairs the paper's statement and number with ours (mean, spread over seeds, n) and a verdict, so the
scorecard page is generated from these files, never typed.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

from lib.paths import results_dir

VERDICTS = ("reproduced", "partly", "not reproduced", "not testable offline")


@dataclass
class Claim:
    id: str  # short stable name, e.g. "later_layers_reused"
    claim: str  # the paper's claim in one sentence
    paper: str  # the paper's number or statement, e.g. "0.82" or "qualitative"
    ours: str  # our measurement as text, e.g. "0.71 ± 0.03 (n=3)"
    verdict: str  # one of VERDICTS
    reason: str  # one line: why this verdict
    value: float | None = None  # our headline number (mean over seeds), if there is one
    spread: float | None = None  # its standard deviation over seeds
    n: int | None = None  # number of seeds / runs behind it
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict must be one of {VERDICTS}, got {self.verdict!r}")


def measured(values, fmt: str = "{:.3f}") -> tuple[str, float, float, int]:
    """('m ± s (n=k)', mean, sample std, k) for a list of per-seed values."""
    v = np.asarray(values, dtype=float)
    s = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return f"{fmt.format(v.mean())} ± {fmt.format(s)} (n={len(v)})", float(v.mean()), s, len(v)


def write(chapter: str, paper: str, profile: str, models: dict, claims: list[Claim], **extra) -> dict:
    """Write results/<chapter>.json: {chapter, paper, profile, models (name -> size info), claims, ...}."""
    record = {"chapter": chapter, "paper": paper, "profile": profile, "models": models,
              "claims": [dataclasses.asdict(c) for c in claims], **extra}
    path = results_dir() / f"{chapter}.json"
    path.write_text(json.dumps(record, indent=1, default=float))
    return record


def read_all(folder=None) -> list[dict]:
    folder = folder or results_dir()
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if "claims" in p.read_text()[:10_000]]
