"""Notebook 00_base_models: the page of the study's own base models (trained by `lib.bases`), or, in the local
profile, of the packaged real models: sizes, training curves, held-out loss against a unigram model, samples."""
from __future__ import annotations

import json

from lib import bases as _bases
from lib.bases import Spec as Config  # the page's parameters (imports no torch: `make check` reads only these)


def build(cfg: Config) -> dict:
    """Every model of the profile: the study's base models, or (local profile) the packaged real models."""
    if cfg.profile == "local":
        return {n: _bases.get_local(n, cfg) for n in _bases.LOCAL_MODELS}
    return _bases.get_all(cfg)


def _trained(models: dict) -> dict:
    return {n: b for n, b in models.items() if not isinstance(b, dict)}  # local-profile entries are dicts


def summary(models: dict):
    import pandas as pd

    rows = []
    for name, b in models.items():
        if isinstance(b, dict):  # local profile
            rows.append({"model": name, "parameters (M)": b["n_params"] / 1e6, "held-out loss": b["val_loss"],
                         "held-out perplexity": b["val_ppl"], "load from GGUF (s)": b["load_seconds_first"],
                         "load from cache (s)": b["load_seconds_cached"]})
            continue
        m = b.metrics
        rows.append({"model": name, "family": m["arch"]["family"], "layers": m["arch"]["n_layers"],
                     "d_model": m["arch"]["d_model"], "parameters (M)": m["n_params"] / 1e6,
                     "non-embedding (M)": m["n_params_non_embedding"] / 1e6, "tokens seen (M)": m["tokens_seen"] / 1e6,
                     "train time (s)": m["train_seconds"], "tokens/s": m["tokens_per_s"],
                     "held-out loss": m["val_loss"], "unigram loss": m["unigram_loss"],
                     "gain over unigram (nats)": m["unigram_loss"] - m["val_loss"],
                     "held-out perplexity": m["val_ppl"], "unigram perplexity": m["unigram_ppl"]})
    return pd.DataFrame(rows).set_index("model").round(3)


def evals_frame(b):
    import pandas as pd

    return pd.DataFrame(json.loads((b.artifact.path / "evals.json").read_text()))


def plot_curves(models: dict):
    """Training and held-out loss against tokens seen, one panel per trained base (None in the local profile)."""
    import matplotlib.pyplot as plt

    from lib import plotting

    trained = _trained(models)
    if not trained:
        return None
    fig, axes = plt.subplots(1, len(trained), figsize=(3.6 * len(trained), 3.2), squeeze=False)
    for ax, (name, b) in zip(axes[0], trained.items()):
        h = b.history()
        tokens_per_step = b.metrics["tokens_seen"] / max(1, h["step"].max())
        ax.plot(h["step"] * tokens_per_step / 1e6, h["train_loss"], lw=0.6, alpha=0.6, label="train")
        ev = evals_frame(b)
        ax.plot(ev["step"] * tokens_per_step / 1e6, ev["val_loss"], "o", ms=4, label="held-out")
        ax.axhline(b.metrics["unigram_loss"], ls="--", c="k", lw=1, label="unigram")
        ax.set(title=name, xlabel="tokens seen (M)", ylabel="loss (nats)")
        ax.legend(fontsize=8)
    return plotting.finish(fig)


GAIN_CLEAR = 0.5  # nats below the unigram model: what the page calls a clear gain


def verdict_text(table, cfg: Config):
    from lib import page

    if cfg.profile == "local":
        parts = [f"**{n}** reaches a held-out perplexity of {r['held-out perplexity']:.1f} on the English corpus "
                 f"(loaded in {r['load from cache (s)']:.2f} s from the cache, {r['load from GGUF (s)']:.1f} s the first time)"
                 for n, r in table.iterrows()]
        return page.md("; ".join(parts) + ".")
    parts = []
    for n, r in table.iterrows():
        ok = r["gain over unigram (nats)"] > GAIN_CLEAR
        parts.append(f"**{n}** ({r['parameters (M)']:.2f} M parameters, {r['tokens seen (M)']:.2f} M tokens): held-out "
                     f"loss {r['held-out loss']:.2f} nats against {r['unigram loss']:.2f} for the unigram model, "
                     f"{'a clear gain' if ok else 'NOT a clear gain'} of {r['gain over unigram (nats)']:.2f} nats "
                     f"(perplexity {r['held-out perplexity']:.1f} vs {r['unigram perplexity']:.1f})")
    return page.md(f"Profile `{cfg.profile}`. " + "; ".join(parts) + ".")


def samples(models: dict, n_tokens: int = 24):
    """Greedy continuations of the causal LMs and the masked LM's top fills, as Markdown."""
    from lib import evals, page

    prompts = {"causal": ["The dog is a", "def __init__(self, name):\n", "A river is"],
               "masked": ["the dog is a domesticated [MASK].", "a [MASK] is a large body of water."]}
    lines = []
    for name, b in models.items():
        model, tok = (b["model"], b["tokenizer"]) if isinstance(b, dict) else (b.model, b.tokenizer)
        with evals.eval_mode(model):
            if name == "bert":
                for p in prompts["masked"]:
                    enc = tok(p, return_tensors="pt")
                    logits = model(**enc).logits[0]
                    pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0, 0]
                    top = tok.convert_ids_to_tokens(logits[pos].topk(5).indices.tolist())
                    lines.append(f"- `{name}` fills `{p}` with: {', '.join(f'`{t}`' for t in top)}")
                continue
            for p in prompts["causal"]:
                enc = tok(p, return_tensors="pt")
                room = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
                out = model.generate(**enc, max_new_tokens=min(n_tokens, room - enc["input_ids"].shape[1]),
                                     do_sample=False, pad_token_id=tok.eos_token_id)
                text = tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
                lines.append(f"- `{name}`: `{p!r}` → `{text!r}`")
    return page.md("\n".join(lines))


def write_results(table, cfg: Config) -> None:
    import numpy as np

    from lib import results as _results

    rows = {n: {k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v) for k, v in r.items()}
            for n, r in table.iterrows()}
    record = {"profile": cfg.profile, "precision": cfg.precision, "models": rows}
    _results.write_json("base_models.json", record)
