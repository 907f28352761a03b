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


def overview_figure(built: dict, cfg: Config):
    """Document lengths per corpus (a seeded sample) and the share of each character class."""
    import matplotlib.pyplot as plt

    from lib import plotting

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for name, c in built.items():
        lengths = doc_lengths(c, cfg.sample_docs, cfg.seed)
        bins = np.logspace(np.log10(40), np.log10(max(lengths.max(), 100)), 40)
        axes[0].hist(lengths, bins=bins, histtype="step", lw=1.5, label=name, color=plotting.PALETTE[name],
                     density=True)
    axes[0].set(xscale="log", xlabel="document length (characters)", ylabel="density", title="Document lengths")
    axes[0].legend()
    shares = {name: char_class_shares(c) for name, c in built.items()}
    x, bottom = np.arange(len(shares)), np.zeros(len(shares))
    for k in next(iter(shares.values())):
        vals = np.array([shares[n][k] for n in shares])
        axes[1].bar(x, vals, bottom=bottom, label=k)
        bottom += vals
    axes[1].set(xticks=x, xticklabels=list(shares), ylabel="share of characters", title="Character classes")
    axes[1].legend(fontsize=8, loc="lower right")
    return plotting.finish(fig)


def overview_text(built: dict, table: pd.DataFrame, cfg: Config):
    from lib import page

    big = table["characters"].idxmax()
    ws = {n: char_class_shares(c)["whitespace"] for n, c in built.items()}
    return page.md(
        f"The largest corpus is **{big}** with {table.loc[big, 'characters'] / 1e6:.1f} M characters in "
        f"{table.loc[big, 'documents']:,} documents (profile `{cfg.profile}`, cap {cfg.max_chars / 1e6:g} M characters "
        f"per corpus). Whitespace is {100 * max(ws.values()):.0f} % of the characters of "
        f"**{max(ws, key=ws.get)}** but {100 * min(ws.values()):.0f} % of **{min(ws, key=ws.get)}**.")


def write_results(built: dict, cfg: Config) -> None:
    from lib import results as _results

    _results.write_json("data.json", {"profile": cfg.profile, "corpora": {
        n: {"fingerprint": c.fingerprint, "documents": len(c.docs), "characters": c.n_chars}
        for n, c in built.items()}})
