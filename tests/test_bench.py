"""lib.bench's bookkeeping (the measurements themselves are the benchmark, not tests)."""
import json

import pytest

from lib import bench


@pytest.fixture
def fake_runs(monkeypatch):
    calls = []

    def run(notebooks, profile, cache, out, jobs):
        calls.append((tuple(notebooks), profile, cache, out, jobs))
        cache.mkdir(parents=True, exist_ok=True)
        for nb in notebooks:
            (cache / nb).write_text("artifact")  # a cold run fills the cache
        return {**{nb: {"seconds": 1.0, "peak_rss_mib": 10} for nb in notebooks}, "_all": {"seconds": 1.5}}

    monkeypatch.setattr(bench, "run_book", run)
    return calls


def test_each_jobs_value_runs_cold_then_warm_and_the_book_gets_the_last_run(tmp_path, fake_runs):
    reports = []
    rep = bench.notebooks(["smoke"], ["00_data", "07_scorecard"], tmp_path / "cache", book=tmp_path / "book",
                          progress=lambda r: reports.append(json.dumps(r)), jobs=(1, 2))
    rows = rep["smoke"]
    states = {"cold, JOBS=1", "warm, JOBS=1", "cold, JOBS=2", "warm, JOBS=2"}
    assert set(rows["00_data"]) == states and set(rows["_all"]) == states
    assert [c[4] for c in fake_runs] == [1, 1, 2, 2]
    assert fake_runs[0][2] != tmp_path / "cache"  # JOBS=1 got its own empty cache ...
    assert fake_runs[0][2] == fake_runs[1][2]  # ... which its warm run reused
    assert fake_runs[2][2] == fake_runs[3][2] == tmp_path / "cache"  # the last JOBS value fills the kept cache
    assert [c[3] == tmp_path / "book" for c in fake_runs] == [False, False, False, True]
    assert len(reports) == 4  # the report is saved after every run


def test_a_cold_run_refuses_a_filled_cache(tmp_path, fake_runs):
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "old").write_text("x")
    with pytest.raises(SystemExit, match="not empty"):
        bench.notebooks(["smoke"], ["00_data"], tmp_path / "cache")
    with pytest.raises(SystemExit, match="one profile"):
        bench.notebooks(["smoke", "tiny"], ["00_data"], tmp_path / "other")
    warm = bench.notebooks(["smoke"], ["00_data"], tmp_path / "cache", states=("warm",), jobs=(2,))
    assert warm["smoke"]["00_data"]["warm, JOBS=2"]
    assert len(fake_runs) == 1


def test_flops_per_token_counts_a_tied_unembedding():
    from lib import models

    cfg = models.ModelConfig("gpt2", d_model=16, n_layers=2, n_heads=2, d_mlp=64, n_ctx=8, d_vocab=50)
    model = models.build_model(cfg, seed=0)
    per_layer = 16 * 48 + 16 * 16 + 16 * 64 * 2  # c_attn, c_proj, MLP in and out
    assert bench.train_flops_per_token(model, 8) == 6 * (2 * per_layer + 16 * 50) + 6 * 2 * 8 * 16


def test_a_relative_cache_or_results_folder_means_the_repository_root(monkeypatch):
    from lib import paths

    monkeypatch.setenv("STUDY_CACHE", "data/other-cache")
    assert paths.cache_dir() == paths.ROOT / "data" / "other-cache"
    monkeypatch.setenv("STUDY_CACHE", "/tmp/abs-cache")
    assert str(paths.cache_dir()) == "/tmp/abs-cache"
