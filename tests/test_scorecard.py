"""The scorecard only lays out what the chapters wrote: counts, the glance table and missing chapters."""
import json

import pytest

from lib import results
from lib.results import Claim
from lib.chapters import scorecard


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    (tmp_path / "results").mkdir()
    mk = lambda i, v: Claim(id=f"c{i}", claim="x", paper="0.5", ours="0.4", verdict=v, reason="rule")
    results.write("01_lin", "Lin 2024, a title", "tiny", {"base": {"params": 1_334_016}},
                  [mk(0, "reproduced"), mk(1, "partly"), mk(2, "partly")])
    results.write("05_horn", "Horn & Elliott 2024 (arXiv)", "tiny", {"base": {"parameters (M)": 3.1}, "sae": {}},
                  [mk(0, "not testable offline")])
    (tmp_path / "results" / "data.json").write_text(json.dumps({"rows": 3}))  # not a claims file: ignored
    return tmp_path / "results"


def test_counts_and_missing_chapters(folder):
    cfg = scorecard.Config.load("smoke")
    records, missing = scorecard.load(cfg)
    assert [r["chapter"] for r in records] == ["01_lin", "05_horn"]
    assert "01_lin" not in missing and "05_horn" not in missing
    assert set(missing) == set(scorecard.expected_chapters()) - {"01_lin", "05_horn"}
    counts = scorecard.counts_table(records, missing)
    assert counts.loc["01_lin", "reproduced"] == 1 and counts.loc["01_lin", "partly"] == 2
    assert counts.loc["01_lin", "claims"] == 3 and counts.loc["05_horn", "not testable offline"] == 1
    assert all(counts.loc[nb, "claims"] == 0 for nb in missing)


def test_glance_lists_every_claim_mark(folder):
    records, missing = scorecard.load(scorecard.Config.load("smoke"))
    md = scorecard.glance_markdown(records, missing)
    line = next(l for l in md.splitlines() if l.startswith("| 01_lin"))
    assert "✔ ◐ ◐" in line and "1 reproduced, 2 partly" in line and "| Lin 2024 |" in line
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
