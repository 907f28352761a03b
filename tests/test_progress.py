"""Progress lines reach the build's console only through STUDY_PROGRESS, throttled, and warnings are copied."""
import warnings

import pytest

from lib import progress


@pytest.fixture
def channel(tmp_path, monkeypatch):
    path = tmp_path / "nb.progress"
    monkeypatch.setenv("STUDY_PROGRESS", str(path))
    monkeypatch.setattr(progress, "MIN_LOOP", 0.0)
    return path


def test_nothing_is_written_without_a_build(tmp_path, monkeypatch):
    monkeypatch.delenv("STUDY_PROGRESS", raising=False)
    progress.stage("hello")
    tick = progress.Ticker("loop", 3, interval=0)
    for _ in range(3):
        tick.update()
    tick.close()
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("value", ["1", "0", "nb.progress"])
def test_a_relative_value_is_no_progress_file(value, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("STUDY_PROGRESS", value)
    progress.stage("hello")
    assert not list(tmp_path.iterdir())


def test_ticker_reports_step_rate_and_eta(channel):
    tick = progress.Ticker("training base gpt", 4, interval=0)
    tick.update(tokens=2048)
    first = channel.read_text().splitlines()[0]
    assert first.startswith("training base gpt  step 1/4") and "tok/s" in first and "eta" in first
    for _ in range(3):
        tick.update(tokens=2048)
    tick.close()
    assert channel.read_text().splitlines()[-1].startswith("training base gpt  step 4/4") and "done in" in \
        channel.read_text().splitlines()[-1]


def test_ticker_is_throttled(channel):
    tick = progress.Ticker("loop", 1000, interval=3600)
    for _ in range(1000):
        tick.update()
    assert not channel.exists()


def test_warnings_are_copied_to_the_console(channel):
    with warnings.catch_warnings():  # restores warnings.showwarning afterwards
        warnings.simplefilter("always")
        progress.copy_warnings()
        warnings.warn("artifact x is corrupt; recomputing it")
    assert "warning: UserWarning: artifact x is corrupt" in channel.read_text()


def test_a_kernel_takes_up_its_new_thread_allowance(tmp_path, monkeypatch):
    import torch

    allowance = tmp_path / "nb.threads"
    monkeypatch.setenv("STUDY_THREADS_FILE", str(allowance))
    before = torch.get_num_threads()
    try:
        allowance.write_text("1")
        progress.sync_threads(force=True)
        assert torch.get_num_threads() == 1
        allowance.write_text("2")
        progress.sync_threads()  # within THREADS_EVERY of the last look: not yet
        assert torch.get_num_threads() == 1
        progress.sync_threads(force=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_runner_shares_the_cores_among_running_jobs(tmp_path, monkeypatch):
    from lib import run as runner

    monkeypatch.setattr(runner, "cores", lambda: 2)
    jobs = [runner.Job(nb, None, 0.0, tmp_path / "p", tmp_path / "l", threads=1, allowance=tmp_path / f"{nb}.threads")
            for nb in ("a", "b")]
    runner.rebalance(jobs)
    assert [j.allowance.exists() for j in jobs] == [False, False]  # already one core each: nothing rewritten
    runner.rebalance(jobs[:1])  # b finished: a is alone
    assert jobs[0].allowance.read_text() == "2" and jobs[0].threads == 2
