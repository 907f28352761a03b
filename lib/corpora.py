"""Offline text corpora, built deterministically from Debian packages.

No machine of the study reaches the internet, so every corpus comes from text that a package ships:

| corpus    | sources | license |
|-----------|---------|---------|
| `english` | GCIDE dictionary entries, WordNet 3.0 glosses, the Python 3.11 documentation's prose | GPL-3+ / WordNet 3.0 / PSF-2.0 |
| `python`  | the CPython 3.11.2 standard library as Debian packages it (`libpython3.11-minimal`, `libpython3.11-stdlib`; `.py`) | PSF-2.0 |
| `lua`     | `.lua` files of lua-penlight, luarocks, lua-busted, lua-ldoc, prosody (MIT/Expat) and lmod (LGPL) | Expat / LGPL-2.1+ |
| `stories` | literary fortune cookies (`fortunes`, `fortunes-min`): short anecdotes, jokes and quotations | BSD-like (fortune-mod) |

Debian packages are fetched with `apt-get download` and unpacked with `dpkg-deb -x` into `data/sources/`,
without installing anything, and checked against the md5sums they ship before any corpus is read (`lib.sources`).
A corpus is a list of documents; its fingerprint is the SHA-256 of their text and is part of the cache key of
everything trained on it. The corpus's own cache key covers the content it is read from (the packages' checksums,
and the code that reads it, so a changed source is never served under an old key. The Python corpus is read from
Debian's packages of the standard library, never from the interpreter that runs the build (a pyenv 3.11.7 and
Debian's 3.11.2 ship different files, so two machines would train different models).
"""
from __future__ import annotations

import gzip
import hashlib
import json
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from lib.config import Config as _Config, ConfigError, param
from lib.sources import (DEBIAN_PACKAGES, REPAIR, MissingSourceError, digest as source_digest,  # noqa: F401
                         fetch as fetch_sources, have_package, package_dir, require, version)

LUA_PACKAGES = ("lua-penlight", "luarocks", "lua-busted", "lua-ldoc", "prosody", "lmod")
STORY_FILES = ("literature", "fortunes", "riddles", "people", "humorists", "wisdom", "kids", "pets", "food",
               "love", "work", "education", "men-women", "miscellaneous", "platitudes", "songs-poems")
CORPORA = ("english", "python", "lua", "stories")
# The 45 WordNet lexicographer files, indexed by lex_filenum (WordNet's lexnames(5WN) table).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute noun.body "
    "noun.cognition noun.communication noun.event noun.feeling noun.food noun.group noun.location noun.motive "
    "noun.object noun.person noun.phenomenon noun.plant noun.possession noun.process noun.quantity noun.relation "
    "noun.shape noun.state noun.substance noun.time verb.body verb.change verb.cognition verb.communication "
    "verb.competition verb.consumption verb.contact verb.creation verb.emotion verb.motion verb.perception "
    "verb.possession verb.social verb.stative verb.weather adj.ppl").split()


# --------------------------------------------------------------------------- readers, one per source
def _clean_ws(text: str) -> str:
    return re.sub(r"[ \t]+", " ", re.sub(r"\n{3,}", "\n\n", text)).strip()


def gcide_entries() -> list[str]:
    """Dictionary entries of GCIDE (Webster 1913 + additions), markup removed, one document per entry."""
    require("dict-gcide")
    root = package_dir("dict-gcide") / "usr/share/dictd"
    text = gzip.open(root / "gcide.dict.dz").read().decode("utf-8", "replace")
    docs = []
    for block in re.split(r"\n(?=\S[^\n]*\\[^\n]*\\)", text):  # an entry starts with `Word \Pro*nun"ci*a`\`
        block = re.sub(r"\[(1913 Webster|PJC|Century Dict\.|Webster 1913 Suppl\.|[A-Z]{2,4})\]", "", block)
        block = re.sub(r"\\[^\\\n]*\\", "", block)  # pronunciation
        block = re.sub(r"[{}]", "", block)
        block = re.sub(r"\s*\n\s*", " ", block.strip())
        if len(block) > 40 and not block.startswith("00-database"):
            docs.append(_clean_ws(block))
    return docs


@dataclass(frozen=True)
class Synset:
    offset: int
    pos: str  # n, v, a, s, r
    lexname: str  # e.g. noun.animal
    words: tuple[str, ...]
    pointers: tuple[tuple[str, int, str], ...]  # (symbol, target offset, target pos)
    gloss: str


def wordnet_synsets(pos_files=("noun", "verb", "adj", "adv")) -> list[Synset]:
    """Every synset of WordNet 3.0 (117,659 with all four files), parsed from `data.<pos>`."""
    require("wordnet-base")
    out = []
    for name in pos_files:
        for line in (package_dir("wordnet-base") / f"usr/share/wordnet/data.{name}").open(encoding="latin-1"):
            if line.startswith("  "):
                continue  # license header
            head, _, gloss = line.partition("|")
            f = head.split()
            n_words = int(f[3], 16)
            words = tuple(f[4 + 2 * i].replace("_", " ") for i in range(n_words))
            i = 4 + 2 * n_words
            n_ptr = int(f[i])
            ptrs = tuple((f[i + 1 + 4 * k], int(f[i + 2 + 4 * k]), f[i + 3 + 4 * k]) for k in range(n_ptr))
            out.append(Synset(int(f[0]), f[2], LEXNAMES[int(f[1])], words, ptrs, gloss.strip()))
    return out


def wordnet_glosses() -> list[str]:
    return [f"{s.words[0]}: {s.gloss}" for s in wordnet_synsets()]


def python_doc_prose() -> list[str]:
    """The Python 3.11 documentation's reST sources, with markup reduced to plain prose; one doc per file."""
    require("python3.11-doc")
    root = package_dir("python3.11-doc") / "usr/share/doc/python3.11/html/_sources"
    docs = []
    for path in sorted(root.rglob("*.rst.txt")):
        text = path.read_text(encoding="utf-8", errors="replace")
        text = re.sub(r"^\.\. .*$", "", text, flags=re.M)  # directives and comments
        text = re.sub(r":[a-z:]+:`~?([^`<]*?)(?: <[^>]*>)?`", r"\1", text)  # roles
        text = re.sub(r"`+([^`]*)`+_?", r"\1", text)
        text = re.sub(r"^[=\-~^*#\"+']{3,}\s*$", "", text, flags=re.M)  # heading underlines
        text = _clean_ws(text)
        if len(text) > 200:
            docs.append(text)
    return docs


STDLIB_PACKAGES = ("libpython3.11-minimal", "libpython3.11-stdlib")  # Debian's CPython standard library
STDLIB_VERSION = "3.11.2"  # the upstream release the python corpus is pinned to (any Debian revision of it)
STDLIB_ROOT = "usr/lib/python3.11"
STDLIB_SKIP = {"site-packages", "dist-packages", "idlelib", "lib2to3", "turtledemo", "__pycache__", "ensurepip"}


def stdlib_version() -> str:
    """The Debian version of the standard-library packages; MissingSourceError unless they are CPython 3.11.2."""
    require(*STDLIB_PACKAGES)
    found = {pkg: version(pkg) for pkg in STDLIB_PACKAGES}
    wrong = {p: v for p, v in found.items() if not (v or "").startswith(STDLIB_VERSION + "-")}
    if wrong:
        raise MissingSourceError(
            "the python corpus is pinned to CPython " + STDLIB_VERSION + " but the unpacked package(s) are "
            + ", ".join(f"{p} {v}" for p, v in wrong.items()) + f": delete {package_dir(STDLIB_PACKAGES[0]).parent}"
            "/libpython3.11-* and run `make data` on Debian 12 (bookworm), whose archive has this release")
    return found[STDLIB_PACKAGES[-1]]


def stdlib_files(include_tests: bool = False) -> list[tuple[str, Path]]:
    """(path inside the standard library, file) of every `.py` file the python corpus reads, sorted by path.

    The two packages split one tree (`usr/lib/python3.11`) between them; a path in both is an error."""
    stdlib_version()
    skip = STDLIB_SKIP | (set() if include_tests else {"test", "tests", "idle_test"})
    out: dict[str, Path] = {}
    for pkg in STDLIB_PACKAGES:
        root = package_dir(pkg) / STDLIB_ROOT
        for path in root.rglob("*.py"):
            rel = path.relative_to(root).as_posix()
            if path.is_symlink() or skip & set(rel.split("/")):
                continue
            if rel in out:
                raise MissingSourceError(f"{rel} is in both {STDLIB_PACKAGES}: unexpected packaging; {REPAIR}")
            out[rel] = path
    return sorted(out.items())


def python_stdlib(include_tests: bool = False) -> list[str]:
    """Source files of Debian's CPython 3.11.2 standard library (sorted by path), one document each."""
    docs = []
    for _, path in stdlib_files(include_tests):
        text = path.read_text(encoding="utf-8", errors="replace")
        if 200 < len(text) < 400_000:
            docs.append(text)
    return docs


def lua_sources() -> list[str]:
    require(*LUA_PACKAGES)
    docs = []
    for pkg in LUA_PACKAGES:
        for path in sorted(package_dir(pkg).rglob("*.lua")):
            text = path.read_text(encoding="utf-8", errors="replace")
            if len(text) > 200:
                docs.append(text)
    return docs


def fortune_stories() -> list[str]:
    """Fortune cookies from the literary files (separated by `%` lines), each one document."""
    require("fortunes", "fortunes-min")
    docs = []
    for name in STORY_FILES:
        for pkg in ("fortunes", "fortunes-min"):
            path = package_dir(pkg) / "usr/share/games/fortunes" / name
            if path.exists():
                for cookie in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
                    cookie = _clean_ws(cookie.replace("\t", " "))
                    if len(cookie) > 60:
                        docs.append(cookie)
    return docs


SOURCES = {  # corpus -> (readers, Debian packages, license)
    "english": ((gcide_entries, wordnet_glosses, python_doc_prose), ("dict-gcide", "wordnet-base", "python3.11-doc"),
                "GPL-3+ (GCIDE), WordNet 3.0, PSF-2.0"),
    "python": ((python_stdlib,), STDLIB_PACKAGES, "PSF-2.0"),
    "lua": ((lua_sources,), LUA_PACKAGES, "Expat (5 packages), LGPL-2.1+ (lmod)"),
    "stories": ((fortune_stories,), ("fortunes", "fortunes-min"), "BSD-like"),
}


# --------------------------------------------------------------------------- corpora
@dataclass
class Corpus:
    name: str
    docs: list[str]
    sources: tuple[str, ...]
    license: str

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.docs)

    @property
    def n_chars(self) -> int:
        return sum(map(len, self.docs))

    def split(self, val_fraction: float = 0.05) -> tuple[list[str], list[str]]:
        """Deterministic train/validation split by document hash (stable when the corpus grows)."""
        train, val = [], []
        for d in self.docs:
            h = int(hashlib.sha1(d.encode()).hexdigest()[:8], 16) / 16**8
            (val if h < val_fraction else train).append(d)
        return train, val


def fingerprint(docs: list[str]) -> str:
    h = hashlib.sha256()
    for d in docs:
        h.update(d.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def build_corpus(name: str, max_chars: int | None = None, seed: int = 0) -> Corpus:
    """Read, deduplicate and (if `max_chars` is set) subsample one corpus; deterministic for a given seed.

    Subsampling takes whole documents in a seeded random order until `max_chars`, so a small corpus is a
    representative sample rather than the alphabetically first files.
    """
    if name not in SOURCES:
        raise ValueError(f"unknown corpus {name!r}: choose one of {', '.join(CORPORA)}")
    readers, packages, license_ = SOURCES[name]
    require(*packages)
    seen, docs = set(), []
    for reader in readers:
        for d in reader():
            if d not in seen:
                seen.add(d)
                docs.append(d)
    if max_chars is not None:
        order = list(range(len(docs)))
        random.Random(seed).shuffle(order)
        keep, total = [], 0
        for i in order:
            if total >= max_chars:
                break
            keep.append(i)
            total += len(docs[i])
        docs = [docs[i] for i in sorted(keep)]
    return Corpus(name, docs, tuple(packages), license_)


def save_corpus(corpus: Corpus, folder: Path) -> None:
    with open(folder / "docs.jsonl", "w", encoding="utf-8") as f:
        for d in corpus.docs:
            f.write(json.dumps(d, ensure_ascii=False) + "\n")


def read_docs(folder: Path) -> list[str]:
    with open(folder / "docs.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def content_fingerprints(name: str) -> list[str]:
    """What a corpus is read from, as a digest of its packages' versions and checksums (checked now; a missing or
    damaged file raises MissingSourceError naming it and `make data`)."""
    if name not in SOURCES:
        raise ValueError(f"unknown corpus {name!r}: choose one of {', '.join(CORPORA)}")
    return [source_digest(*SOURCES[name][1])]


def _key_parts(name: str, max_chars: int | None, seed: int) -> dict:
    return {"kind": "corpus", "cfg": {"name": name, "max_chars": max_chars, "seed": seed},
            "fingerprints": content_fingerprints(name), "code": ("lib.corpora",)}


def corpus_key(name: str, max_chars: int | None = None, seed: int = 0) -> str:
    """The cache key `load_corpus` files this corpus under (it changes whenever the source content does)."""
    from lib.artifacts import artifact_key

    return artifact_key(**_key_parts(name, max_chars, seed))


def load_corpus(name: str, max_chars: int | None = None, seed: int = 0, recompute: bool = False) -> Corpus:
    """The corpus through the artifact cache (`data/cache/corpus/<key>/docs.jsonl`); its sources are checked first."""
    from lib.artifacts import load_or_compute

    parts = _key_parts(name, max_chars, seed)

    def compute(out: Path) -> dict:
        c = build_corpus(name, max_chars, seed)
        save_corpus(c, out)
        return {"fingerprint": c.fingerprint, "n_docs": len(c.docs), "n_chars": c.n_chars}

    art = load_or_compute(parts["kind"], parts["cfg"], compute, fingerprints=parts["fingerprints"],
                          code=parts["code"], recompute=recompute)
    _, packages, license_ = SOURCES[name]
    corpus = Corpus(name, read_docs(art.path), tuple(packages), license_)
    if corpus.fingerprint != art.metrics["fingerprint"]:
        raise RuntimeError(f"corpus {name} at {art.path} does not match its recorded fingerprint")
    return corpus


@dataclass(frozen=True)
class CorpusConfig(_Config):
    """Which corpora the study builds and how large: the parameters of notebook 00_data."""
    notebook = "00_data"
    corpora: tuple[str, ...] = param(CORPORA, choices=CORPORA, doc="corpora to build")
    max_chars: int = param(20_000_000, lo=10_000, hi=10**9, doc="cap per corpus (whole documents, seeded sample)")
    sample_docs: int = param(2_000, lo=10, hi=10**6, doc="documents per corpus drawn for the length figure")

    def validate(self):
        if not self.corpora:
            raise ConfigError("parameter 'corpora' is empty: name at least one of " + ", ".join(CORPORA))


if __name__ == "__main__":  # `make data` runs `python -m lib.corpora fetch`
    from lib import sources

    sys.exit(sources.main(sys.argv[1:]))
