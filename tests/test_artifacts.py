"""The cache: keyed, atomic, checksummed; corrupt or half-written artifacts are never reused."""
import json
import multiprocessing as mp
import os
import signal
import time

import pytest

import lib
from lib import artifacts
from lib.artifacts import artifact_key, load_or_compute, verify


def writer(payload=b"weights", calls=None):
    def compute(out):
        if calls is not None:
            calls.append(1)
        (out / "weights.bin").write_bytes(payload)
        return {"loss": 0.5}
    return compute


def test_compute_then_load(tmp_path):
    calls = []
    a = load_or_compute("toy", {"n": 1}, writer(calls=calls), root=tmp_path)
    b = load_or_compute("toy", {"n": 1}, writer(calls=calls), root=tmp_path)
    assert len(calls) == 1 and not a.cached and b.cached
    assert b.metrics["loss"] == 0.5 and b.cfg["cfg"] == {"n": 1} and b.cfg["lib_version"] == lib.__version__
    assert (b.path / "weights.bin").read_bytes() == b"weights"


def test_record_names_the_thread_counts_that_built_it(tmp_path):
    """Not keyed (a rebuild at another count keeps the key) but recorded: the counts at the start and the end."""
    import torch

    before = torch.get_num_threads()

    def compute(out):
        torch.set_num_threads(1)  # as lib.run may change it while a model trains
        (out / "w.bin").write_bytes(b"w")

    try:
        a = load_or_compute("toy", {"n": 2}, compute, root=tmp_path)
    finally:
        torch.set_num_threads(before)
    assert a.cfg["torch_threads"] == {"start": before, "end": 1}
    assert a.key == artifact_key("toy", {"n": 2})


def test_key_covers_config_data_and_version(monkeypatch):
    k = artifact_key("toy", {"n": 1}, ["abc"])
    assert k != artifact_key("toy", {"n": 2}, ["abc"])
    assert k != artifact_key("toy", {"n": 1}, ["abd"])
    assert k != artifact_key("other", {"n": 1}, ["abc"])
    assert k == artifact_key("toy", {"n": 1}, ["abc"])
    monkeypatch.setattr(lib, "__version__", "99")
    assert k != artifact_key("toy", {"n": 1}, ["abc"])


@pytest.mark.parametrize("damage", ["truncate", "edit_cfg", "delete", "manifest"])
def test_corrupt_artifact_is_detected_and_recomputed(tmp_path, damage):
    a = load_or_compute("toy", {"n": 1}, writer(b"x" * 1000), root=tmp_path)
    if damage == "truncate":
        (a.path / "weights.bin").write_bytes(b"x" * 10)
    elif damage == "edit_cfg":
        cfg = json.loads((a.path / "cfg.json").read_text())
        cfg["cfg"]["n"] = 2
        (a.path / "cfg.json").write_text(json.dumps(cfg))
    elif damage == "delete":
        (a.path / "weights.bin").unlink()
    else:
        (a.path / "manifest.json").unlink()
    assert verify(a.path) is not None
    calls = []
    with pytest.warns(UserWarning, match="corrupt"):
        b = load_or_compute("toy", {"n": 1}, writer(b"x" * 1000, calls), root=tmp_path)
    assert calls == [1] and not b.cached and verify(b.path) is None
    assert (b.path / "weights.bin").read_bytes() == b"x" * 1000


def test_recompute_flag_rebuilds(tmp_path):
    calls = []
    load_or_compute("toy", {"n": 1}, writer(calls=calls), root=tmp_path)
    load_or_compute("toy", {"n": 1}, writer(calls=calls), root=tmp_path, recompute=True)
    assert len(calls) == 2


def test_exception_during_compute_leaves_nothing(tmp_path):
    def boom(out):
        (out / "weights.bin").write_bytes(b"half")
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        load_or_compute("toy", {"n": 1}, boom, root=tmp_path)
    assert list((tmp_path / "toy").iterdir()) == []


def _slow_writer(root):
    def compute(out):
        (out / "weights.bin").write_bytes(b"half")
        time.sleep(60)
    load_or_compute("toy", {"n": 1}, compute, root=root)


def test_process_killed_mid_write_is_never_reused(tmp_path):
    p = mp.get_context("fork").Process(target=_slow_writer, args=(tmp_path,))
    p.start()
    deadline = time.time() + 20
    while time.time() < deadline and not any((tmp_path / "toy").glob(".tmp-*/weights.bin")):
        time.sleep(0.05)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    key = artifact_key("toy", {"n": 1})
    assert not (tmp_path / "toy" / key).exists()  # the half-written folder never got the real name
    calls = []
    a = load_or_compute("toy", {"n": 1}, writer(calls=calls), root=tmp_path)
    assert calls == [1] and (a.path / "weights.bin").read_bytes() == b"weights"
    assert not list((tmp_path / "toy").glob(".tmp-*"))  # the dead run's temp folder was cleaned up


def _counting_writer(root, log):
    def compute(out):
        with open(log, "a") as f:
            f.write("built\n")
        time.sleep(1.0)  # long enough that the other process asks while this one builds
        (out / "weights.bin").write_bytes(b"w")
    art = load_or_compute("toy", {"n": 7}, compute, root=root)
    with open(log, "a") as f:
        f.write(f"{'loaded' if art.cached else 'computed'}\n")


def test_two_processes_build_one_artifact_once(tmp_path):
    """Concurrent requests for one missing artifact: one builds it, the other waits and loads it."""
    log = tmp_path / "log.txt"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_counting_writer, args=(tmp_path, log)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(log.read_text().split()) == ["built", "computed", "loaded"]


def test_lock_of_a_killed_holder_is_released(tmp_path):
    """A process killed while it holds an artifact's lock does not block the next one (the OS drops the lock)."""
    p = mp.get_context("fork").Process(target=_slow_writer, args=(tmp_path,))
    p.start()
    time.sleep(1.0)
    os.kill(p.pid, signal.SIGKILL)
    p.join()
    start = time.perf_counter()
    art = load_or_compute("toy", {"n": 1}, writer(), root=tmp_path)
    assert not art.cached and time.perf_counter() - start < 10
