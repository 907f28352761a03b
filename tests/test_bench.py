"""lib.bench's bookkeeping (the measurements themselves are the benchmark, not tests)."""
import json

import pytest

from lib import bench


@pytest.fixture
def fake_runs(monkeypatch):
    calls = []

    def run(nb, profile, cache, out):
        calls.append((nb, profile, cache, out))
        cache.mkdir(parents=True, exist_ok=True)
        (cache / nb).write_text("artifact")  # a cold run fills the cache
        return {"seconds": 1.0, "peak_rss_mib": 10}

    monkeypatch.setattr(bench, "run_notebook", run)
    return calls


def test_cold_then_warm_share_one_cache_and_the_book_gets_the_last_state(tmp_path, fake_runs):
    reports = []
    rep = bench.notebooks(["smoke"], ["00_data", "07_scorecard"], tmp_path / "cache", book=tmp_path / "book",
                          progress=lambda r: reports.append(json.dumps(r)))
    rows = rep["smoke"]
    assert set(rows["00_data"]) == {"cold", "warm"} and set(rows["_all"]) == {"cold", "warm"}
    assert {c[2] for c in fake_runs} == {tmp_path / "cache"}
    assert [c[3] == tmp_path / "book" for c in fake_runs] == [False, False, True, True]
    timings = json.loads((tmp_path / "book" / "timings.json").read_text())
    assert timings == {"profile": "smoke", "seconds": {"00_data": 1.0, "07_scorecard": 1.0}}
    assert len(reports) == 4  # the report is saved after every notebook


def test_a_cold_run_refuses_a_filled_cache(tmp_path, fake_runs):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "old").write_text("x")
    with pytest.raises(SystemExit, match="not empty"):
        bench.notebooks(["smoke"], ["00_data"], tmp_path / "cache")
    with pytest.raises(SystemExit, match="one profile"):
        bench.notebooks(["smoke", "tiny"], ["00_data"], tmp_path / "other")
    assert bench.notebooks(["smoke"], ["00_data"], tmp_path / "cache", states=("warm",))["smoke"]["00_data"]["warm"]
    assert not fake_runs[:-1]


def test_a_relative_cache_or_results_folder_means_the_repository_root(monkeypatch):
    from lib import paths

    monkeypatch.setenv("STUDY_CACHE", "data/other-cache")
    assert paths.cache_dir() == paths.ROOT / "data" / "other-cache"
    monkeypatch.setenv("STUDY_CACHE", "/tmp/abs-cache")
    assert str(paths.cache_dir()) == "/tmp/abs-cache"
