"""Notebook 07_scorecard: the reproduction scorecard, generated from the `results/*.json` every chapter writes.

Nothing on the scorecard is typed: each row is a `lib.results.Claim` that a chapter computed, with its verdict
decided by a rule stated on that chapter's page. This module only reads, checks and lays out those records:
one row per headline claim, the per-chapter verdict counts, and the short "at a glance" table that the intro
page includes (`glance.md`, written beside the results).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import results as _results
from lib.config import Config as _Config, ConfigError, param
from lib.paths import ROOT, results_dir
from lib.chapters import NOTEBOOKS

VERDICT_ORDER = ("reproduced", "partly", "not reproduced", "not testable offline")
VERDICT_COLOR = {"reproduced": "#55a868", "partly": "#dd8452", "not reproduced": "#c44e52",
                 "not testable offline": "#8c8c8c", "not run": "#dddddd"}
VERDICT_MARK = {"reproduced": "✔", "partly": "◐", "not reproduced": "✘", "not testable offline": "–"}


@dataclass(frozen=True)
class Config(_Config):
    notebook = "07_scorecard"
    results: str = param("", doc="folder of results/*.json to read; empty: this run's own results folder "
                                 "(the book's, when built by `make book`)")

    def validate(self):
        if self.results and not self.folder().is_dir():
            raise ConfigError(f"parameter 'results' = {self.results!r} is not a folder: point it at a results folder "
                              "written by a build, e.g. book/notebooks/results")

    def folder(self) -> Path:
        if not self.results:
            return results_dir()
        p = Path(self.results)
        return p if p.is_absolute() else ROOT / p


READERS = ("07_scorecard", "08_performance")  # pages that read what others wrote and write no claims


def expected_chapters() -> list[str]:
    """The notebooks whose results belong on the scorecard: the findings and the synthesis (not 00_*, not readers)."""
    return [nb for nb in NOTEBOOKS if not nb.startswith("00_") and nb not in READERS]


def load(cfg: Config) -> tuple[list[dict], list[str]]:
    """(records sorted by chapter, chapters expected but missing). Each record is checked for the claim schema."""
    records = _results.read_all(cfg.folder())
    for r in records:
        for c in r["claims"]:
            if c.get("verdict") not in VERDICT_ORDER:
                raise ValueError(f"{r['chapter']}: claim {c.get('id')!r} has verdict {c.get('verdict')!r}, "
                                 f"not one of {VERDICT_ORDER}")
    records = sorted(records, key=lambda r: r["chapter"])
    have = {r["chapter"] for r in records}
    return records, [nb for nb in expected_chapters() if nb not in have]


def _n_params(info: dict) -> float | None:
    for k, v in info.items():
        if not isinstance(v, (int, float)):
            continue
        if re.fullmatch(r"(n_)?param(eter)?s", k):
            return float(v)
        if re.fullmatch(r"param(eter)?s \(M\)", k):
            return float(v) * 1e6
    return None


def model_sizes(models: dict) -> str:
    """'base 1.3M, tuned 1.3M, ...' from a chapter's `models` record (names without a size are listed bare)."""
    parts = []
    for name, info in models.items():
        n = _n_params(info) if isinstance(info, dict) else None
        parts.append(f"{name} {n / 1e6:.2f}M" if n else name)
    return ", ".join(parts)


def short_paper(paper: str) -> str:
    """'Lin 2024, Fine-tuned network ...' -> 'Lin 2024' (authors up to the year)."""
    m = re.match(r".*?\b(?:19|20)\d\d\b", paper)
    return m.group(0) if m else paper


def claims_table(records: list[dict]) -> pd.DataFrame:
    """One row per claim: chapter, claim, the paper's number, ours, verdict, reason."""
    rows = [{"chapter": r["chapter"], "paper": short_paper(r["paper"]), "claim": c["claim"], "paper's number": c["paper"],
             "ours": c["ours"], "verdict": c["verdict"], "reason": c["reason"]}
            for r in records for c in r["claims"]]
    cols = ["chapter", "paper", "claim", "paper's number", "ours", "verdict", "reason"]
    return pd.DataFrame(rows, columns=cols)


def counts_table(records: list[dict], missing: list[str]) -> pd.DataFrame:
    """Verdict counts per chapter, with the profile and the model sizes; a missing chapter gets a 'not run' row."""
    rows = []
    for r in records:
        verdicts = [c["verdict"] for c in r["claims"]]
        rows.append({"chapter": r["chapter"], "paper": short_paper(r["paper"]), "profile": r["profile"],
                     **{v: verdicts.count(v) for v in VERDICT_ORDER}, "claims": len(verdicts)})
    for nb in missing:
        rows.append({"chapter": nb, "paper": "(not run in this build)", "profile": "", **{v: 0 for v in VERDICT_ORDER},
                     "claims": 0})
    return pd.DataFrame(rows).set_index("chapter")


def styled(table: pd.DataFrame):
    """A claims table with each verdict cell coloured (rendered as HTML in the book)."""
    def colour(v):
        return f"background-color: {VERDICT_COLOR.get(v, 'white')}33; font-weight: 600"

    return (table.style.map(colour, subset=["verdict"]).hide(axis="index")
            .set_properties(**{"text-align": "left", "vertical-align": "top"}))


def chapter_sections(records: list[dict]):
    """Per chapter: (a heading line with the profile and the model sizes, its styled claims table)."""
    table = claims_table(records)
    for r in records:
        part = table[table["chapter"] == r["chapter"]].drop(columns=["chapter", "paper"])
        head = (f"**{r['chapter']}: {short_paper(r['paper'])}** ({r['profile']} profile; models: "
                f"{model_sizes(r.get('models', {})) or 'see the chapter'})")
        yield head, styled(part)


def plot_counts(counts: pd.DataFrame):
    """Stacked horizontal bars: verdicts per chapter."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(counts) + 1.2))
    left = pd.Series(0, index=counts.index, dtype=float)
    for v in VERDICT_ORDER:
        ax.barh(counts.index, counts[v], left=left, color=VERDICT_COLOR[v], label=v)
        left += counts[v]
    ax.invert_yaxis()
    ax.set_xlabel("headline claims")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(counts) > 3 else -0.4))
    ax.grid(axis="y", visible=False)
    return fig


def glance_markdown(records: list[dict], missing: list[str]) -> str:
    """The intro page's compact table: one line per chapter, its verdict marks and profile."""
    lines = ["| chapter | paper | verdicts | profile |", "|---|---|---|---|"]
    for r in records:
        marks = " ".join(VERDICT_MARK[c["verdict"]] for c in r["claims"])
        counts = ", ".join(f"{sum(c['verdict'] == v for c in r['claims'])} {v}" for v in VERDICT_ORDER
                           if any(c["verdict"] == v for c in r["claims"]))
        lines.append(f"| {r['chapter']} | {short_paper(r['paper'])} | {marks} ({counts}) | {r['profile']} |")
    for nb in missing:
        lines.append(f"| {nb} | not run in this build | | |")
    legend = ", ".join(f"{m} {v}" for v, m in VERDICT_MARK.items())
    return "\n".join(lines) + f"\n\n{legend}. Generated from `results/*.json` by the scorecard notebook.\n"


def write_glance(cfg: Config, records: list[dict], missing: list[str]) -> Path:
    """Write `glance.md` beside this run's results folder (the intro page includes `notebooks/glance.md`)."""
    path = results_dir().parent / "glance.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(glance_markdown(records, missing))
    return path
