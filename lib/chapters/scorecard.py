"""Notebook 07_scorecard: the reproduction scorecard, generated from the `results/*.json` every chapter writes.

Nothing on the scorecard is typed: each row is a `lib.claims.Claim` that a chapter computed, with its verdict
decided by a rule stated on that chapter's page. This module only reads, checks and lays out those records:
one row per headline claim (the paper's number, ours with its interval, the rule in one line, and for a claim that
was not decided the failed precondition or the missing power), the per-chapter counts of every verdict of
`lib.claims.VERDICTS` (zeros shown), and the short "at a glance" table that the intro page includes (`glance.md`,
written beside the results). The synthesis's rows (records with `scope: synthesis`) compare the papers' conclusions
with the study's common lenses; they are listed and counted apart from the papers' own claims.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from lib import results as _results
from lib.claims import DECIDED, NOT_TESTABLE, VERDICTS
from lib.config import Config as _Config, ConfigError, param
from lib.paths import ROOT, results_dir
from lib.chapters import NOTEBOOKS

VERDICT_ORDER = VERDICTS  # every category, in the vocabulary's order
VERDICT_COLOR = {"reproduced": "#55a868", "partly": "#dd8452", "not reproduced": "#c44e52",
                 "not testable at this scale": "#8172b3", "inconclusive": "#ccb974",
                 "not testable offline": "#8c8c8c", "not run": "#dddddd"}
VERDICT_MARK = {"reproduced": "✔", "partly": "◐", "not reproduced": "✘", "not testable at this scale": "⊘",
                "inconclusive": "?", "not testable offline": "–"}
SYNTHESIS_SCOPE = "synthesis"  # a record's `scope`: rows that compare the papers with the study's own lenses


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


def check(record: dict) -> None:
    """Every claim has a verdict of the vocabulary, and a claim whose precondition failed is "not testable at this
    scale" (never counted as "not reproduced" or any other decided verdict)."""
    for c in record["claims"]:
        if c.get("verdict") not in VERDICT_ORDER:
            raise ValueError(f"{record['chapter']}: claim {c.get('id')!r} has verdict {c.get('verdict')!r}, "
                             f"not one of {VERDICT_ORDER}")
        if c.get("precondition") and c["verdict"] != NOT_TESTABLE:
            raise ValueError(f"{record['chapter']}: claim {c.get('id')!r} names a failed precondition "
                             f"({c['precondition']}) but has verdict {c['verdict']!r}, not {NOT_TESTABLE!r}")


def is_synthesis(record: dict) -> bool:
    return record.get("scope") == SYNTHESIS_SCOPE


def paper_name(record: dict) -> str:
    """'Lin 2024' for a chapter; what the synthesis is, for its record."""
    return "synthesis: the papers' conclusions on the study's lenses" if is_synthesis(record) \
        else short_paper(record["paper"])


def claim_text(c: dict) -> str:
    """The claim in a sentence; a synthesis row, one per pair, starts with its pair."""
    pair = (c.get("extra") or {}).get("pair")
    return f"{pair}: {c['claim']}" if pair else c["claim"]


def load(cfg: Config) -> tuple[list[dict], list[str]]:
    """(records sorted by chapter, chapters expected but missing). Each record is checked (`check`)."""
    records = _results.read_all(cfg.folder())
    for r in records:
        check(r)
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


def interval_text(c: dict) -> str:
    """'[lo, hi]' of the interval the claim's decision read, '' if it has none."""
    iv = c.get("interval")
    return f"[{iv[0]:.3g}, {iv[1]:.3g}]" if iv else ""


def why_text(c: dict) -> str:
    """Why the verdict: for a claim that was not decided, the failed precondition (with its measured value) or the
    missing power; for a decided one, the chapter's one-line reason."""
    if c["verdict"] == NOT_TESTABLE:
        return f"precondition failed: {c.get('precondition') or c['reason']}"
    if c["verdict"] not in DECIDED:
        return f"{c['verdict']}: {c['reason']}"
    return c["reason"]


def claims_table(records: list[dict]) -> pd.DataFrame:
    """One row per claim: chapter, claim, the paper's number, ours and its interval, verdict, rule, why."""
    rows = [{"chapter": r["chapter"], "paper": paper_name(r), "claim": claim_text(c), "paper's number": c["paper"],
             "ours": c["ours"], "interval": interval_text(c), "verdict": c["verdict"],
             "rule": c.get("rule") or "(not recorded)", "why": why_text(c)}
            for r in records for c in r["claims"]]
    cols = ["chapter", "paper", "claim", "paper's number", "ours", "interval", "verdict", "rule", "why"]
    return pd.DataFrame(rows, columns=cols)


def _count_row(claims: list[dict]) -> dict:
    verdicts = [c["verdict"] for c in claims]
    return {**{v: verdicts.count(v) for v in VERDICT_ORDER}, "claims": len(verdicts)}


def counts_table(records: list[dict], missing: list[str]) -> pd.DataFrame:
    """Counts of every verdict per chapter (zeros shown), with the profile; the papers' chapters first, then a
    total of the papers' claims, then the synthesis apart; a missing chapter gets a 'not run' row."""
    rows = []
    papers = [r for r in records if not is_synthesis(r)]
    for r in papers:
        rows.append({"chapter": r["chapter"], "paper": short_paper(r["paper"]), "profile": r["profile"],
                     **_count_row(r["claims"])})
    for nb in missing:
        rows.append({"chapter": nb, "paper": "(not run in this build)", "profile": "", **_count_row([])})
    rows.append({"chapter": "papers' claims, all", "paper": "", "profile": "",
                 **_count_row([c for r in papers for c in r["claims"]])})
    for r in records:
        if is_synthesis(r):
            rows.append({"chapter": r["chapter"], "paper": paper_name(r), "profile": r["profile"],
                         **_count_row(r["claims"])})
    return pd.DataFrame(rows).set_index("chapter")


def styled(table: pd.DataFrame):
    """A claims table with each verdict cell coloured (rendered as HTML in the book)."""
    def colour(v):
        return f"background-color: {VERDICT_COLOR.get(v, 'white')}33; font-weight: 600"

    return (table.style.map(colour, subset=["verdict"]).hide(axis="index")
            .set_properties(**{"text-align": "left", "vertical-align": "top"}))


def chapter_sections(records: list[dict]):
    """Per chapter, the papers' chapters first and the synthesis last: (a heading line with the profile and the model
    sizes, its styled claims table)."""
    table = claims_table(records)
    for r in sorted(records, key=is_synthesis):
        part = table[table["chapter"] == r["chapter"]].drop(columns=["chapter", "paper"])
        head = (f"**{r['chapter']}: {paper_name(r)}** ({r['profile']} profile; models: "
                f"{model_sizes(r.get('models', {})) or 'see the chapter'})")
        yield head, styled(part)


def plot_counts(counts: pd.DataFrame):
    """Stacked horizontal bars: verdicts per chapter (the total row left out); returns the Figure."""
    import matplotlib.pyplot as plt

    counts = counts.drop(index=[i for i in counts.index if i.startswith("papers' claims")])
    fig, ax = plt.subplots(figsize=(7.5, 0.45 * len(counts) + 1.2))
    left = pd.Series(0, index=counts.index, dtype=float)
    for v in VERDICT_ORDER:
        ax.barh(counts.index, counts[v], left=left, color=VERDICT_COLOR[v], label=v)
        left += counts[v]
    ax.invert_yaxis()
    ax.set_xlabel("headline claims")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.25 if len(counts) > 3 else -0.4))
    ax.grid(axis="y", visible=False)
    fig.tight_layout()
    return fig


def glance_markdown(records: list[dict], missing: list[str]) -> str:
    """The intro page's compact table: one line per chapter with the count of every verdict (zeros shown) and its
    profile; the synthesis on a line of its own below the papers."""
    head = " | ".join(f"{VERDICT_MARK[v]} {v}" for v in VERDICT_ORDER)
    lines = [f"| chapter | paper | {head} | profile |", "|---|---|" + "---|" * len(VERDICT_ORDER) + "---|"]

    def line(chapter: str, paper: str, claims: list[dict], profile: str) -> str:
        n = _count_row(claims)
        return f"| {chapter} | {paper} | " + " | ".join(str(n[v]) for v in VERDICT_ORDER) + f" | {profile} |"

    for r in records:
        if not is_synthesis(r):
            lines.append(line(r["chapter"], short_paper(r["paper"]), r["claims"], r["profile"]))
    for nb in missing:
        lines.append(f"| {nb} | not run in this build |" + " |" * len(VERDICT_ORDER) + " |")
    for r in records:
        if is_synthesis(r):
            lines.append(line(f"{r['chapter']} (synthesis)", paper_name(r), r["claims"], r["profile"]))
    return ("\n".join(lines) + "\n\nCounts of claims per verdict. Generated from `results/*.json` by the scorecard "
            "notebook; the synthesis's rows compare the papers' conclusions with the study's own lenses and are "
            "counted apart from the papers' claims.\n")


def write_glance(cfg: Config, records: list[dict], missing: list[str]) -> Path:
    """Write `glance.md` beside this run's results folder (the intro page includes `notebooks/glance.md`)."""
    path = results_dir().parent / "glance.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(glance_markdown(records, missing))
    return path
