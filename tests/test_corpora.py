"""Corpora are deterministic (same sources and parameters, same fingerprint), and never read from damaged sources:
every file of a Debian package is checked against the md5sums it ships, `make data` repairs what fails, and a
corpus's cache key changes whenever its source content does. Tests that damage a source work on copies."""
import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

from lib import corpora, sources
from lib.paths import SOURCES_DIR as LIVE_SOURCES


def test_fingerprint_is_content_hash():
    assert corpora.fingerprint(["a", "b"]) == corpora.fingerprint(["a", "b"])
    assert corpora.fingerprint(["a", "b"]) != corpora.fingerprint(["b", "a"])
    assert corpora.fingerprint(["ab"]) != corpora.fingerprint(["a", "b"])


@pytest.mark.parametrize("name", corpora.CORPORA)
def test_build_is_deterministic_and_capped(name):
    a = corpora.build_corpus(name, max_chars=100_000, seed=0)
    b = corpora.build_corpus(name, max_chars=100_000, seed=0)
    assert a.fingerprint == b.fingerprint and len(a.docs) >= 2
    assert a.n_chars >= 100_000 and a.n_chars - max(map(len, a.docs)) < 100_000  # stops at the first doc past the cap
    assert len(set(a.docs)) == len(a.docs)  # deduplicated
    c = corpora.build_corpus(name, max_chars=100_000, seed=1)
    assert c.fingerprint != a.fingerprint


def test_split_is_stable_and_disjoint():
    c = corpora.build_corpus("stories", max_chars=200_000)
    train, val = c.split(0.1)
    assert set(train).isdisjoint(val) and len(train) + len(val) == len(c.docs)
    assert 0.03 < len(val) / len(c.docs) < 0.2
    assert c.split(0.1) == (train, val)


def test_cached_corpus_matches_built(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    a = corpora.load_corpus("lua", max_chars=50_000)
    assert a.fingerprint == corpora.build_corpus("lua", max_chars=50_000).fingerprint
    assert corpora.load_corpus("lua", max_chars=50_000).fingerprint == a.fingerprint
    assert (tmp_path / "corpus" / corpora.corpus_key("lua", 50_000)).is_dir()


def test_wordnet_parse():
    syn = corpora.wordnet_synsets(("noun",))
    assert len(syn) == 82115  # WordNet 3.0 noun synsets
    dog = next(s for s in syn if "dog" in s.words and s.lexname == "noun.animal")
    assert "domesticated" in dog.gloss and any(p[0] == "@" for p in dog.pointers)


def test_missing_source_says_what_to_run(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "SOURCES_DIR", tmp_path)
    with pytest.raises(corpora.MissingSourceError, match="make data"):
        corpora.require("wordnet-base")
    monkeypatch.setattr(sources.shutil, "which", lambda name: None)
    with pytest.raises(corpora.MissingSourceError, match="wordnet-base"):
        corpora.fetch_sources(("wordnet-base",))


# --------------------------------------------------------------------------- a small package built here
FAKE = "fake-src"
FILES = {"usr/share/fake/one.lua": "-- one\n" + "local x = 1\n" * 40, "usr/share/fake/two.txt": "two\n" * 30}
CONFFILE = ("etc/fake/conf.lua", "-- a conffile: dpkg leaves it out of md5sums\n" + "y = 2\n" * 40)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """A temporary SOURCES dir, and `fake-src_1.0-1_all.deb` (built with dpkg-deb) served by a stand-in apt."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed")
    tree = tmp_path / "build"
    for rel, text in [*FILES.items(), CONFFILE]:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(text)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN/control").write_text(f"Package: {FAKE}\nVersion: 1.0-1\nArchitecture: all\n"
                                         "Maintainer: nobody <nobody@example.org>\nDescription: a test package\n")
    (tree / "DEBIAN/md5sums").write_text("".join(f"{_md5(t)}  {rel}\n" for rel, t in FILES.items()))
    (tree / "DEBIAN/conffiles").write_text("/" + CONFFILE[0] + "\n")
    archive = tmp_path / "apt"
    archive.mkdir()
    deb = archive / f"{FAKE}_1.0-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(tree), str(deb)], check=True, capture_output=True)
    calls = []

    def apt_download(spec, dest):
        calls.append(spec)
        shutil.copy(deb, dest / deb.name)
        return subprocess.CompletedProcess([], 0, "", "")

    monkeypatch.setattr(sources, "SOURCES_DIR", tmp_path / "sources")
    monkeypatch.setattr(sources, "apt_download", apt_download)
    monkeypatch.setattr(sources, "APT_ARCHIVES", tmp_path / "no-apt-cache")
    assert sources.fetch((FAKE,), quiet=True) == [FAKE] and calls == [FAKE]
    return {"dir": tmp_path / "sources" / FAKE, "deb": deb, "archive": archive, "calls": calls}


def test_fetch_keeps_the_packages_checksums(fake):
    folder = fake["dir"]
    assert (folder / ".md5sums").read_text() == "".join(f"{_md5(t)}  {rel}\n" for rel, t in FILES.items())
    assert CONFFILE[0] in (folder / ".md5sums-unlisted").read_text()
    assert (folder / ".complete").read_text().strip() == fake["deb"].name
    assert sources.problems(FAKE) == [] and sources.version(FAKE) == "1.0-1"
    sources.require(FAKE)
    assert sources.fetch((FAKE,)) == []  # nothing to do


def _delete(p):
    p.unlink()


def _truncate(p):
    p.write_bytes(p.read_bytes()[:10])


def _edit(p):
    data = p.read_bytes()
    p.write_bytes(data[:-2] + b"!\n")  # same size


@pytest.mark.parametrize("damage", [_delete, _truncate, _edit], ids=["deleted", "truncated", "edited"])
@pytest.mark.parametrize("rel", ["usr/share/fake/one.lua", CONFFILE[0]], ids=["listed", "conffile"])
def test_damaged_source_is_named_with_the_repair_command_and_make_data_repairs_it(fake, damage, rel):
    sources.require(FAKE)  # verified once: the check must not be skipped as remembered
    damage(fake["dir"] / rel)
    with pytest.raises(sources.MissingSourceError, match=f"(?s){rel}.*make data"):
        sources.require(FAKE)
    assert sources.fetch((FAKE,), quiet=True) == [FAKE]  # what `make data` runs
    assert sources.problems(FAKE) == []
    assert (fake["dir"] / rel).read_text() == dict([*FILES.items(), CONFFILE])[rel]
    assert fake["calls"] == [FAKE, f"{FAKE}=1.0-1"]  # repaired in the version it had


def test_an_added_file_is_caught_and_removed_by_the_repair(fake):
    (fake["dir"] / "usr/share/fake/stray.lua").write_text("print('not from the package')\n" * 20)
    with pytest.raises(sources.MissingSourceError, match="stray.lua does not belong"):
        sources.require(FAKE)
    sources.fetch((FAKE,), quiet=True)
    assert not (fake["dir"] / "usr/share/fake/stray.lua").exists() and sources.problems(FAKE) == []


def test_repair_prefers_the_apt_cache(fake, monkeypatch):
    monkeypatch.setattr(sources, "APT_ARCHIVES", fake["archive"])
    (fake["dir"] / "usr/share/fake/two.txt").unlink()
    sources.fetch((FAKE,), quiet=True)
    assert fake["calls"] == [FAKE] and sources.problems(FAKE) == []


def test_an_unpack_without_checksums_gets_them_and_stays_in_place(fake):
    folder = fake["dir"]
    (folder / ".md5sums").unlink()
    (folder / ".md5sums-unlisted").unlink()  # as unpacked before checksums were kept
    with pytest.raises(sources.MissingSourceError, match="no checksums recorded.*\n.*make data"):
        sources.require(FAKE)
    inode = (folder / "usr/share/fake/one.lua").stat().st_ino
    assert sources.fetch((FAKE,), quiet=True) == [FAKE]
    assert (folder / "usr/share/fake/one.lua").stat().st_ino == inode and sources.problems(FAKE) == []


def test_a_deb_that_fails_its_own_checksums_is_refused(fake, tmp_path):
    bad = tmp_path / "bad"
    subprocess.run(["dpkg-deb", "-R", str(fake["deb"]), str(bad)], check=True)
    (bad / "usr/share/fake/two.txt").write_text("changed after md5sums was written\n")
    deb = tmp_path / f"{FAKE}_1.0-2_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(bad), str(deb)], check=True, capture_output=True)
    with pytest.raises(sources.MissingSourceError, match="two.txt fails its checksum"):
        sources.unpack(deb, tmp_path / "out")


# --------------------------------------------------------------------------- copies of the real sources
def _copy_live(tmp_path, monkeypatch, *packages) -> Path:
    """Copies of live packages in a temporary SOURCES dir (the live ones are never touched)."""
    for pkg in packages:
        if sources.recorded_sums(LIVE_SOURCES / pkg) is None:
            pytest.skip(f"{pkg} is not in data/sources with its checksums (make data)")
    root = tmp_path / "sources"
    for pkg in packages:
        shutil.copytree(LIVE_SOURCES / pkg, root / pkg, symlinks=True)
    monkeypatch.setattr(sources, "SOURCES_DIR", root)
    return root


@pytest.mark.parametrize("damage", [_delete, _truncate], ids=["deleted", "truncated"])
def test_a_damaged_wordnet_file_stops_before_it_is_read(tmp_path, monkeypatch, damage):
    root = _copy_live(tmp_path, monkeypatch, "wordnet-base")
    damage(root / "wordnet-base/usr/share/wordnet/data.verb")
    with pytest.raises(sources.MissingSourceError, match=r"(?s)usr/share/wordnet/data\.verb.*make data"):
        corpora.wordnet_synsets(("noun",))  # even a reader of another file of the package
    with pytest.raises(sources.MissingSourceError, match="data.verb"):
        corpora.corpus_key("english")
    if not (sources.APT_ARCHIVES / (root / "wordnet-base/.complete").read_text().strip()).exists():
        pytest.skip("the repair needs the wordnet-base .deb in the apt cache (or the network)")
    assert sources.fetch(("wordnet-base",), quiet=True) == ["wordnet-base"]
    assert sources.problems("wordnet-base") == []
    assert (root / "wordnet-base/usr/share/wordnet/data.verb").read_bytes() == \
        (LIVE_SOURCES / "wordnet-base/usr/share/wordnet/data.verb").read_bytes()


def test_half_the_lua_sources_deleted_builds_nothing(tmp_path, monkeypatch):
    root = _copy_live(tmp_path, monkeypatch, *corpora.LUA_PACKAGES)
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    lua = sorted(root.rglob("*.lua"))
    for path in lua[::2]:
        path.unlink()
    with pytest.raises(sources.MissingSourceError, match=r"(?s)\.lua is missing.*more.*make data"):
        corpora.load_corpus("lua", max_chars=50_000)
    assert not (tmp_path / "cache" / "corpus").exists()


def test_changed_source_content_changes_the_corpus_key(tmp_path, monkeypatch):
    root = _copy_live(tmp_path, monkeypatch, "fortunes", "fortunes-min")
    before = corpora.corpus_key("stories", 50_000)
    rel = "usr/share/games/fortunes/riddles"
    path = root / "fortunes-min" / rel
    path.write_text(path.read_text() + "%\nA new riddle, long enough to be kept as a document of the corpus.\n")
    with pytest.raises(sources.MissingSourceError, match="riddles fails its checksum"):
        corpora.corpus_key("stories", 50_000)  # an edit in place is damage
    sums = root / "fortunes-min/.md5sums"  # a new package version: new content, its own checksums
    sums.write_text("".join(f"{sources.file_md5(path) if r == rel else m}  {r}\n"
                            for r, m in sources.read_sums(sums).items()))
    assert corpora.corpus_key("stories", 50_000) != before


def _fake_stdlib(root: Path, version: str = "3.11.2-6+deb12u8") -> Path:
    """Two tiny stand-ins for Debian's stdlib packages, with checksums, in a temporary SOURCES dir."""
    files = {"libpython3.11-minimal": {"os.py": "x = 1\n" * 100, "test/test_os.py": "t = 1\n" * 100},
             "libpython3.11-stdlib": {"json/encoder.py": "y = 1\n" * 100, "idlelib/run.py": "z = 1\n" * 100}}
    for pkg, tree in files.items():
        folder = root / pkg
        for rel, text in tree.items():
            path = folder / corpora.STDLIB_ROOT / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        sums = "".join(f"{_md5(t)}  {corpora.STDLIB_ROOT}/{r}\n" for r, t in tree.items())
        (folder / sources.SUMS).write_text(sums)
        (folder / sources.UNLISTED).write_text("")
        (folder / sources.COMPLETE).write_text(f"{pkg}_{version.replace(':', '%3a')}_amd64.deb\n")
    return root


def test_python_corpus_comes_from_the_packages_not_the_interpreter(tmp_path, monkeypatch):
    root = _fake_stdlib(tmp_path / "sources")
    monkeypatch.setattr(sources, "SOURCES_DIR", root)
    assert [rel for rel, _ in corpora.stdlib_files()] == ["json/encoder.py", "os.py"]  # no tests, no idlelib
    assert corpora.python_stdlib() == ["y = 1\n" * 100, "x = 1\n" * 100]
    assert corpora.build_corpus("python").sources == corpora.STDLIB_PACKAGES
    before = corpora.corpus_key("python")
    (root / "libpython3.11-stdlib" / corpora.STDLIB_ROOT / "json/encoder.py").write_text("y = 2\n" * 100)
    with pytest.raises(sources.MissingSourceError, match=r"(?s)json/encoder\.py fails its checksum.*make data"):
        corpora.corpus_key("python")  # a changed stdlib file is damage, named before anything is read
    sums = root / "libpython3.11-stdlib" / sources.SUMS  # a new package revision: new content, its own sums
    sums.write_text(sums.read_text().replace(_md5("y = 1\n" * 100), _md5("y = 2\n" * 100)))
    assert corpora.corpus_key("python") != before


def test_python_corpus_refuses_another_python_release(tmp_path, monkeypatch):
    root = _fake_stdlib(tmp_path / "sources", version="3.11.9-1")
    monkeypatch.setattr(sources, "SOURCES_DIR", root)
    with pytest.raises(sources.MissingSourceError, match=r"pinned to CPython 3\.11\.2.*3\.11\.9-1"):
        corpora.python_stdlib()


def test_live_python_corpus_is_the_packaged_stdlib():
    if any(sources.problems(p) for p in corpora.STDLIB_PACKAGES):
        pytest.skip("the stdlib packages are not in data/sources (make data)")
    files = dict(corpora.stdlib_files())
    assert {"os.py", "json/encoder.py", "collections/__init__.py"} <= set(files)
    assert all(str(LIVE_SOURCES) in str(p) for p in files.values())  # never the interpreter's own stdlib
    assert not any(rel.split("/")[0] in ("test", "idlelib", "lib2to3") for rel in files)
