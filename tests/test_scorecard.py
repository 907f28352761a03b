"""The scorecard only lays out what the chapters wrote: counts of every verdict, the glance table, missing
chapters, the synthesis apart; and the glossary states every verdict as lib.claims does."""
import json

import pytest

from lib import results
from lib.claims import MEANING, NOT_REPRODUCED, NOT_TESTABLE, VERDICTS, Claim
from lib.chapters import scorecard
from lib.paths import ROOT


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results").mkdir()
    mk = lambda i, v: Claim(id=f"c{i}", claim="x", paper="0.5", ours="0.4", verdict=v, reason="rule")
    results.write("01_lin", "Lin 2024, a title", "tiny", {"base": {"params": 1_334_016}},
                  [mk(0, "reproduced"), mk(1, "partly"), mk(2, "partly")])
    results.write("05_horn", "Horn & Elliott 2024 (arXiv)", "tiny", {"base": {"parameters (M)": 3.1}, "sae": {}},
                  [mk(0, "not testable offline"),
                   Claim(id="c1", claim="y", paper="0.9", ours="not decided", verdict=NOT_TESTABLE, reason="gate",
                         precondition="the base's accuracy ≥ 0.5 (measured 0.1)"),
                   Claim(id="c2", claim="z", paper="0.3", ours="0.2 ± 0.1 (n=3)", verdict="inconclusive",
                         reason="the interval straddles the margin", interval=(-0.05, 0.4), rule="effect > 0")])
    results.write("06_synthesis", "Synthesis across the five papers: Lin 2024", "tiny", {},
                  [mk(0, "reproduced"), mk(1, "inconclusive")], scope="synthesis")
    (tmp_path / "results" / "data.json").write_text(json.dumps({"rows": 3}))  # not a claims file: ignored
    return tmp_path / "results"


def test_counts_and_missing_chapters(folder):
    cfg = scorecard.Config.load("smoke")
    records, missing = scorecard.load(cfg)
    assert [r["chapter"] for r in records] == ["01_lin", "05_horn", "06_synthesis"]
    assert "01_lin" not in missing and "05_horn" not in missing
    assert set(missing) == set(scorecard.expected_chapters()) - {"01_lin", "05_horn", "06_synthesis"}
    counts = scorecard.counts_table(records, missing)
    assert all(v in counts.columns for v in VERDICTS)  # every category, zeros shown
    assert counts.loc["01_lin", "reproduced"] == 1 and counts.loc["01_lin", "partly"] == 2
    assert counts.loc["01_lin", "claims"] == 3 and counts.loc["05_horn", "not testable offline"] == 1
    assert counts.loc["05_horn", NOT_TESTABLE] == 1 and counts.loc["05_horn", "inconclusive"] == 1
    assert counts.loc["01_lin", NOT_TESTABLE] == 0
    assert all(counts.loc[nb, "claims"] == 0 for nb in missing)
    papers = counts.loc["papers' claims, all"]
    assert papers["claims"] == 6 and papers["reproduced"] == 1  # the synthesis's rows are not among them
    assert list(counts.index)[-1] == "06_synthesis" and counts.loc["06_synthesis", "claims"] == 2


def test_synthesis_rows_are_listed_apart(folder):
    records, _ = scorecard.load(scorecard.Config.load("smoke"))
    assert [r["chapter"] for r in records if scorecard.is_synthesis(r)] == ["06_synthesis"]
    assert [head.split(":")[0] for head, _ in scorecard.chapter_sections(records)][-1] == "**06_synthesis"


def test_every_undecided_claim_names_its_precondition_or_missing_power(folder):
    records, _ = scorecard.load(scorecard.Config.load("smoke"))
    table = scorecard.claims_table(records)
    gated = table[table["verdict"] == NOT_TESTABLE].iloc[0]
    assert gated["why"] == "precondition failed: the base's accuracy ≥ 0.5 (measured 0.1)"
    unsure = table[table["verdict"] == "inconclusive"].iloc[0]
    assert "straddles" in unsure["why"] and unsure["interval"] == "[-0.05, 0.4]" and unsure["rule"] == "effect > 0"
    assert (table.loc[table["verdict"] == "reproduced", "interval"] == "").all()


def test_a_failed_precondition_is_never_counted_as_not_reproduced(folder):
    records, missing = scorecard.load(scorecard.Config.load("smoke"))
    for r in records:
        for c in r["claims"]:
            assert not (c.get("precondition") and c["verdict"] == NOT_REPRODUCED)
    path = folder / "05_horn.json"
    record = json.loads(path.read_text())
    record["claims"][1]["verdict"] = NOT_REPRODUCED  # a gated claim passed off as decided
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="failed precondition"):
        scorecard.load(scorecard.Config.load("smoke"))


def test_glance_counts_every_category(folder):
    records, missing = scorecard.load(scorecard.Config.load("smoke"))
    md = scorecard.glance_markdown(records, missing)
    header = md.splitlines()[0]
    assert all(f"{scorecard.VERDICT_MARK[v]} {v}" in header for v in VERDICTS)
    line = next(l for l in md.splitlines() if l.startswith("| 01_lin"))
    assert line == "| 01_lin | Lin 2024 | 1 | 2 | 0 | 0 | 0 | 0 | tiny |"
    lines = md.splitlines()
    synth = next(i for i, l in enumerate(lines) if l.startswith("| 06_synthesis (synthesis)"))
    assert synth > max(i for i, l in enumerate(lines) if l.startswith(("| 01_lin", "| 05_horn")))
    path = scorecard.write_glance(scorecard.Config.load("smoke"), records, missing)
    assert path == folder.parent / "glance.md" and path.read_text() == md


def test_model_sizes_and_short_names():
    assert scorecard.model_sizes({"base": {"params": 1_334_016}, "sae": {}}) == "base 1.33M, sae"
    assert scorecard.model_sizes({"E0": {"parameters (M)": 1.5}}) == "E0 1.50M"
    assert scorecard.short_paper("Zhao, Ziser & Cohen 2024 (EMNLP), Layer by Layer") == "Zhao, Ziser & Cohen 2024"


def test_a_bad_verdict_is_rejected(folder):
    path = folder / "01_lin.json"
    record = json.loads(path.read_text())
    record["claims"][0]["verdict"] = "sort of"
    path.write_text(json.dumps(record))
    with pytest.raises(ValueError, match="sort of"):
        scorecard.load(scorecard.Config.load("smoke"))


def test_results_folder_must_exist(tmp_path):
    from lib.config import ConfigError

    with pytest.raises(ConfigError, match="not a folder"):
        scorecard.Config.load("smoke", {"results": str(tmp_path / "nope")})


def test_every_verdict_has_a_colour_and_a_mark():
    assert set(VERDICTS) <= set(scorecard.VERDICT_COLOR) and set(VERDICTS) == set(scorecard.VERDICT_MARK)
    assert len(set(scorecard.VERDICT_MARK.values())) == len(VERDICTS)


def test_glossary_states_every_verdict_as_lib_claims_does():
    text = (ROOT / "book" / "glossary.md").read_text()
    for v in VERDICTS:
        assert f"\n{v}\n  " in text, f"glossary lacks the term {v!r}"
        assert MEANING[v][0].upper() + MEANING[v][1:] in text, f"glossary's {v!r} differs from lib.claims.MEANING"


def test_plot_counts_returns_a_figure(folder):
    import matplotlib.pyplot as plt

    records, missing = scorecard.load(scorecard.Config.load("smoke"))
    fig = scorecard.plot_counts(scorecard.counts_table(records, missing))
    assert fig.axes and "papers' claims, all" not in [t.get_text() for t in fig.axes[0].get_yticklabels()]
    plt.close(fig)
