"""The appendix page's reading of a `make bench` report."""
import json

from lib.chapters import performance as P


def _report(tmp_path, **extra):
    rep = {"date": "d", "machine": {"cores": 2, "cpu": "c"}, **extra,
           "notebooks": {"tiny": {"00_data": {"cold": {"seconds": 6.0, "peak_rss_mib": 300},
                                              "warm": {"seconds": 5.0, "peak_rss_mib": 290}},
                                  "01_lin": {"cold": {"seconds": 60.0, "peak_rss_mib": 900}},
                                  "_all": {"cold": {"seconds": 66.0}}}}}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(rep))
    return P.Config.load("smoke", {"bench_report": str(path)})


def test_one_row_per_notebook_with_cold_and_warm_columns(tmp_path):
    header, table = P.last_bench(_report(tmp_path))
    assert list(table.index) == ["00_data", "01_lin", "whole book"]
    assert table.loc["00_data", ("tiny", "cold", "seconds")] == 6.0
    assert table.loc["00_data", ("tiny", "warm", "peak RSS (MiB)")] == 290
    assert header["machine"]["cores"] == 2 and P.local_loads_table(header) is None


def test_local_loads_and_a_missing_report(tmp_path):
    loads = {"smollm2-135m-instruct": {"from_gguf_s": 20.0, "from_cache_s": 0.4}}
    header, _ = P.last_bench(_report(tmp_path, local_model_loads=loads))
    assert P.local_loads_table(header).loc["smollm2-135m-instruct", "from_cache_s"] == 0.4
    assert P.last_bench(P.Config.load("smoke", {"bench_report": str(tmp_path / "none.json")})) == (None, None)
