"""The artifact cache: expensive results (corpora, tokenizers, trained models) computed once, reused safely.

    art = load_or_compute("base_gpt", cfg, compute, fingerprints=[corpus.fingerprint])

`compute(out_dir)` writes its files into a fresh folder and returns a dict of metrics. The folder's name is
a key: the SHA-256 of the kind, the config, the data fingerprints and `lib.__version__`, so a change in any of
them computes a new artifact instead of serving a stale one. Beside the files go `cfg.json` (what made it),
`metrics.json` and, written last, `manifest.json` with the SHA-256 of every file.

Safety: the folder is built under a temporary name and renamed into place in one step, so a run killed in the
middle leaves nothing that a later run reuses. On load, every file is checked against the manifest; a
missing, truncated or edited file makes the artifact corrupt: it is removed with a warning and recomputed.
Concurrency: a process that has to compute an artifact first takes a lock on its key (`fcntl.flock` on
`.locks/<kind>-<key>` in the cache root); a second process asking for the same key waits, then loads what the first built. The
operating system releases the lock when its holder dies, so a killed build never blocks the next one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lib
from lib import progress
from lib.paths import ROOT, cache_dir

MANIFEST = "manifest.json"


@dataclass
class Artifact:
    kind: str
    key: str
    path: Path
    cfg: dict
    metrics: dict
    cached: bool  # True when loaded from disk, False when computed in this call


def _jsonable(cfg: Any) -> Any:
    if dataclasses.is_dataclass(cfg):
        cfg = cfg.key_dict() if hasattr(cfg, "key_dict") else dataclasses.asdict(cfg)
    return json.loads(json.dumps(cfg, sort_keys=True, default=str))


def code_hash(code=()) -> str:
    """SHA-256 (16 hex digits) of the source of the modules that build an artifact: module objects or dotted
    names; a package counts with every `.py` file under it. '' for no modules."""
    import importlib
    import types

    if not code:
        return ""
    h = hashlib.sha256()
    for mod in sorted({m if isinstance(m, str) else m.__name__ for m in code}):
        module = importlib.import_module(mod) if isinstance(mod, str) else mod
        assert isinstance(module, types.ModuleType)
        origin = Path(module.__file__)
        files = sorted(origin.parent.rglob("*.py")) if origin.name == "__init__.py" else [origin]
        for f in files:
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def artifact_key(kind: str, cfg: Any, fingerprints=(), code=()) -> str:
    """16 hex digits of SHA-256 over (kind, config, data fingerprints, lib version, and the source of the modules
    in `code` that build it: editing a build function gives a new key; editing a report or claims module does not)."""
    parts = {"kind": kind, "cfg": _jsonable(cfg), "data": list(fingerprints), "lib": lib.__version__}
    if code:
        parts["code"] = code_hash(code)
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def torch_threads() -> int | None:
    """torch's intra-op thread count now (None before torch is imported): recorded with each artifact, not keyed.
    bf16 kernels can round differently at another thread count, so two builds of one key at different counts may
    differ in the last bits; the record says which count built this one (`lib.run` may change it between steps)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def lib_source_hash() -> str:
    """Hash of the library's source files: recorded for provenance (not part of the key)."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "lib").rglob("*.py")):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def verify(path: Path) -> str | None:
    """None if the artifact at `path` is complete and intact, else the reason it is not."""
    manifest = path / MANIFEST
    if not manifest.exists():
        return "no manifest (incomplete write)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError) as e:
        return f"unreadable manifest ({e})"
    for name, meta in files.items():
        f = path / name
        if not f.exists():
            return f"missing file {name}"
        if f.stat().st_size != meta["size"]:
            return f"{name} has {f.stat().st_size} bytes, expected {meta['size']}"
        if file_sha256(f) != meta["sha256"]:
            return f"{name} fails its checksum"
    return None


def _write_manifest(path: Path) -> None:
    files = {str(p.relative_to(path)): {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in sorted(path.rglob("*")) if p.is_file() and p.name != MANIFEST}
    (path / MANIFEST).write_text(json.dumps({"files": files}, indent=1))


def _clean_stale_tmp(folder: Path) -> None:
    """Remove temporary folders left by runs that were killed (their process no longer exists)."""
    for tmp in folder.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[2])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            pass


def _load(kind: str, key: str, path: Path) -> Artifact:
    cfg = json.loads((path / "cfg.json").read_text())
    metrics = json.loads((path / "metrics.json").read_text())
    return Artifact(kind, key, path, cfg, metrics, cached=True)


def is_cached(kind: str, cfg: Any, fingerprints=(), root: Path | None = None, code=()) -> bool:
    """Is a complete, intact artifact of (kind, cfg, fingerprints, code) in the cache?"""
    path = Path(root or cache_dir()) / kind / artifact_key(kind, cfg, fingerprints, code)
    return path.exists() and verify(path) is None


@contextlib.contextmanager
def key_lock(folder: Path, key: str, what: str = ""):
    """Hold the lock of artifact `key` of the kind whose folder is `folder` (blocking); says on the build's console
    when it has to wait. Lock files stay (empty) in `<cache root>/.locks/`: removing one while another process
    waits on it would let a third take a second lock on a new file."""
    locks = folder.parent / ".locks"
    locks.mkdir(exist_ok=True)
    with open(locks / f"{folder.name}-{key}", "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress.stage(f"waiting for another process to finish {what or key}")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def load_or_compute(kind: str, cfg: Any, compute: Callable[[Path], dict | None], *, fingerprints=(),
                    recompute: bool = False, root: Path | None = None, code=()) -> Artifact:
    """Return the cached artifact for (kind, cfg, fingerprints), computing it with `compute(out_dir)` if needed.

    `cfg` is a dict or a dataclass (a notebook `Config` contributes its `key_dict()`); `fingerprints` are the
    content fingerprints of the data it was made from; `code` the modules whose source builds it (see
    `artifact_key`). `recompute=True` rebuilds even a valid artifact. Two
    processes that need the same missing artifact build it once: the second waits for the first, then loads it.
    """
    key = artifact_key(kind, cfg, fingerprints, code)
    folder = Path(root or cache_dir()) / kind
    path = folder / key
    folder.mkdir(parents=True, exist_ok=True)
    if not recompute and path.exists() and verify(path) is None:
        return _load(kind, key, path)
    with key_lock(folder, key, f"{kind}/{key}"):
        _clean_stale_tmp(folder)
        if path.exists():  # built by the process we waited for, or corrupt, or to be rebuilt
            problem = "recompute requested" if recompute else verify(path)
            if problem is None:
                return _load(kind, key, path)
            if not recompute:
                warnings.warn(f"artifact {kind}/{key} is corrupt ({problem}); recomputing it", stacklevel=2)
            shutil.rmtree(path)
        return _compute(kind, key, cfg, fingerprints, compute, folder, path)


def _compute(kind, key, cfg, fingerprints, compute, folder: Path, path: Path) -> Artifact:
    progress.stage(f"building {kind}/{key}")
    tmp = folder / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    tmp.mkdir()
    try:
        start, threads_before = time.perf_counter(), torch_threads()
        metrics = compute(tmp) or {}
        metrics = {**metrics, "compute_seconds": round(time.perf_counter() - start, 3)}
        record = {"kind": kind, "key": key, "cfg": _jsonable(cfg), "fingerprints": list(fingerprints),
                  "lib_version": lib.__version__, "lib_source": lib_source_hash(),
                  "torch_threads": {"start": threads_before, "end": torch_threads()}}
        (tmp / "cfg.json").write_text(json.dumps(record, indent=1, sort_keys=True))
        (tmp / "metrics.json").write_text(json.dumps(_jsonable(metrics), indent=1, sort_keys=True))
        _write_manifest(tmp)
        try:
            os.rename(tmp, path)
        except OSError:  # another process finished the same artifact first: keep theirs if it is intact
            if verify(path) is not None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    art = _load(kind, key, path)
    art.cached = False
    return art
