"""What every page shows the same way: the verdict table, the rules, computed Markdown, full-width tables.

    page.setup()                         # once per notebook: figure style and tables that show their whole text
    page.verdict_table(claims)           # one column set for every chapter
    page.rules(RULES)                    # the rules as the tests read them (rendered from their declarations)
    page.md(f"... {value:.2f} ...")      # computed prose: a Markdown object the notebook displays

Numbers in prose always come from values computed in the same build (report functions return the Markdown).
"""
from __future__ import annotations

from typing import Iterable

import pandas as pd
from IPython.display import Markdown

from lib.claims import MEANING, VERDICTS, Claim, Rule

COLUMNS = ("claim", "paper", "ours", "verdict", "why")


def setup() -> None:
    """Figure style, and pandas tables that never cut a cell's text (pandas' default cuts at 50 characters)."""
    from lib import plotting

    plotting.setup()
    pd.set_option("display.max_colwidth", None)
    pd.set_option("display.max_columns", 50)
    pd.set_option("display.width", 250)


def md(text: str) -> Markdown:
    return Markdown(text)


def _as_dict(c) -> dict:
    return c if isinstance(c, dict) else c.__dict__


def verdict_table(claims: Iterable[Claim | dict]) -> pd.DataFrame:
    """claim | paper | ours | verdict | why: the same columns on every page and the scorecard."""
    rows = []
    for c in map(_as_dict, claims):
        why = c.get("precondition") and f"precondition failed: {c['precondition']}" or c.get("reason", "")
        rows.append({"claim": c["claim"], "paper": c["paper"], "ours": c["ours"], "verdict": c["verdict"],
                     "why": why})
    return pd.DataFrame(rows, columns=list(COLUMNS))


def rules(rules: Iterable[Rule]) -> Markdown:
    """A bulleted list: each rule's claim and its test, rendered from the declaration the test reads."""
    return Markdown("\n".join(f"- **{r.id}** ({r.claim}) {r.text()}." for r in rules))


def vocabulary() -> Markdown:
    """The verdict vocabulary, as a Markdown list."""
    return Markdown("\n".join(f"- **{v}**: {MEANING[v]}" for v in VERDICTS))
