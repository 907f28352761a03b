"""Notebook 00_data: the offline corpora of the study, their sizes, sources, licenses and fingerprints."""
from __future__ import annotations

import numpy as np
import pandas as pd

from lib import corpora, sources
from lib.corpora import CorpusConfig as Config  # the parameters of this page (lib.bases reads them too)


def source_table() -> pd.DataFrame:
    """The Debian packages the corpora are read from, each checked file by file against the md5sums it ships
    (raises MissingSourceError naming any missing or damaged file and `make data`)."""
    sources.require(*sources.DEBIAN_PACKAGES)
    rows = [{"package": p, "version": sources.version(p),
             "files checked": len(sources.recorded_sums(sources.package_dir(p))), "license": license_}
            for p, license_ in sources.DEBIAN_PACKAGES.items()]
    return pd.DataFrame(rows).set_index("package")


def build_all(cfg: Config) -> dict[str, corpora.Corpus]:
    return {name: corpora.load_corpus(name, cfg.max_chars, cfg.seed, cfg.recompute) for name in cfg.corpora}


def summary_table(built: dict[str, corpora.Corpus]) -> pd.DataFrame:
    rows = []
    for name, c in built.items():
        train, val = c.split()
        rows.append({"corpus": name, "documents": len(c.docs), "characters": c.n_chars,
                     "words (approx.)": sum(len(d.split()) for d in c.docs),
                     "validation docs": len(val), "sources": ", ".join(c.sources), "license": c.license,
                     "fingerprint": c.fingerprint})
    return pd.DataFrame(rows).set_index("corpus")


def doc_lengths(c: corpora.Corpus, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(c.docs), size=min(n, len(c.docs)), replace=False)
    return np.array([len(c.docs[i]) for i in idx])


def char_class_shares(c: corpora.Corpus) -> dict[str, float]:
    """Share of letters, digits, whitespace and punctuation/symbols: how code differs from prose."""
    text = "".join(c.docs[:: max(1, len(c.docs) // 500)])
    n = max(1, len(text))
    letters = sum(ch.isalpha() for ch in text)
    digits = sum(ch.isdigit() for ch in text)
    space = sum(ch.isspace() for ch in text)
    return {"letters": letters / n, "digits": digits / n, "whitespace": space / n,
            "punctuation & symbols": (n - letters - digits - space) / n}
