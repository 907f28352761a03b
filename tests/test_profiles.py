"""The `local` profile of every notebook end to end, on tiny random models of the packaged models' architectures.

The packaged real models (SmolLM2-135M-Instruct: Llama; Gemma-3-270M: Gemma-3) take minutes to load and hours to
fine-tune, so here `lib.models.load_local` finds, in a temporary cache, a tiny randomly initialised model of the
same family in the folder it would have converted the package's GGUF file into: the real loader, the real
`bases.load("local:...")` and every line of the notebook run, at sizes of the smoke kind. Each notebook's code cells
are executed in this process (no kernel, no papermill): the page's own code path, in seconds. The `paper`
profile's paths, on tiny random GPT-2 / Llama / BERT / Mistral folders, are tested in each chapter's own test file
(`test_paper_profile_*`).

Every test checks that the packaged model it was meant to use was the one loaded (never the study's own base),
that the claims come out in the verdict vocabulary and that the numbers are numbers.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib import claims as claim_vocab, models
from lib.paths import NOTEBOOKS_DIR

pytestmark = pytest.mark.models

# the packaged models' families (lib.models.LOCAL_MODELS), and the traits of the real ones the tiny copies keep:
# tied embeddings (both), grouped key/value heads, Gemma-3's head size that is not d_model / n_heads and its
# sliding-window layers
FAMILY = {"smollm2-135m-instruct": "llama", "gemma-3-270m": "gemma3"}


def tiny_local(family: str, tok, n_layers: int = 2):
    """A random tiny causal LM of `family` for tokenizer `tok` (float32, eval mode)."""
    import transformers as tf

    from tests._tiny import tiny_config

    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id, tie_word_embeddings=True, num_hidden_layers=n_layers,
               max_position_embeddings=128)
    if family == "gemma3":
        ids["layer_types"] = ["sliding_attention"] * (n_layers - 1) + ["full_attention"]
    torch.manual_seed(0)
    cls = {"llama": tf.LlamaForCausalLM, "gemma3": tf.Gemma3ForCausalLM}[family]
    return cls(tiny_config(family, **ids)).eval()


def fast_finish(fig):
    """`plotting.finish` without its layout pass (a second a page here, and the same in every profile)."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig


WORDS = ("the", "a", "dictionary", "word", "means", "of", "light", "water", "river", "stone", "small", "old", "house",
         "to", "run", "read", "and", "is", "in", "tree", "green", "cold", "wind", "book", "line", "page", "king")


def fake_corpora():
    """Stand-ins for the study's English and Python corpora (`bases.source_corpora`): the corpora's own path is
    tested with 00_data; building them from the sources takes minutes."""
    from lib.corpora import Corpus

    rng = np.random.default_rng(0)
    english = [" ".join(rng.choice(WORDS, 40)) + "." for _ in range(400)]
    python = [f"def f{i}(x):\n    return x + {i}\n" for i in range(400)]
    return {"english": Corpus("english", english, ("fake",), "test"),
            "python": Corpus("python", python, ("fake",), "test")}


def fast_probe(X, y, folds: int = 5, C: float = 1.0, seed: int = 0) -> float:
    """A nearest-class-mean stand-in for `probing.probe_accuracy` (its cross-validated logistic regressions, tested
    in test_probing.py, are most of a page's time at these sizes and the same in every profile)."""
    X, y = np.asarray(X, dtype=float), np.asarray(y)
    classes = np.unique(y)
    means = np.stack([X[y == c].mean(0) for c in classes])
    pred = classes[((X[:, None] - means[None]) ** 2).sum(-1).argmin(1)]
    return float((pred == y).mean())


@pytest.fixture
def local_cache(tmp_path, monkeypatch):
    """A fresh cache and results folder; `install(tok)` puts a tiny model of each packaged model's family where
    `models.load_local` looks for its converted copy. `loaded` lists the names `load_local` was asked for."""
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from lib import plotting
    monkeypatch.setattr(plotting, "finish", fast_finish)
    from lib import probing
    monkeypatch.setattr(probing, "probe_accuracy", fast_probe)
    loaded, real = [], models.load_local

    def spy(name, *args, **kwargs):
        loaded.append(name)
        return real(name, *args, **kwargs)
    monkeypatch.setattr(models, "load_local", spy)

    def install(tok, names=tuple(FAMILY), n_layers=2):
        for name in names:
            models.save_model(tiny_local(FAMILY[name], tok, n_layers), tok, tmp_path / "cache" / "local_models" / name)

    def never(*args, **kwargs):
        raise AssertionError("the local profile asked for the study's own base")
    from lib.bases import core
    monkeypatch.setattr(core, "get", never)
    monkeypatch.setattr(core, "get_all", never)
    monkeypatch.setattr(core, "source_corpora", lambda spec: fake_corpora())
    return {"install": install, "loaded": loaded, "results": tmp_path / "results"}


def run_notebook(name: str, profile: str, params: dict) -> dict:
    """Execute the code cells of notebooks/<name>.py in this process, as papermill would (its parameters cell,
    then `profile` and `params` injected); returns the notebook's namespace."""
    import jupytext
    import matplotlib.pyplot as plt

    nb = jupytext.read(NOTEBOOKS_DIR / f"{name}.py")
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    shown: list = []
    ns = {"display": lambda *objs: shown.extend(objs), "__name__": "__main__"}
    exec(compile(cells[0], f"{name} parameters", "exec"), ns)
    ns.update(profile=profile, params=params)
    try:
        for i, source in enumerate(cells[1:], 1):
            exec(compile(source, f"{name} cell {i}", "exec"), ns)
    finally:
        plt.close("all")
    ns["_shown"] = shown
    return ns


def check_verdicts(verdicts) -> None:
    assert verdicts and all(c.verdict in claim_vocab.VERDICTS for c in verdicts), [c.verdict for c in verdicts]


def finite(values) -> bool:
    values = np.asarray(values, dtype=float)
    return values.size > 0 and bool(np.isfinite(values).all())


# ------------------------------------------------------------------------------------------------ 01_lin
def test_lin_local_profile(local_cache):
    """LoRA (rank 8, embeddings frozen) on a Llama-family model with the words prompt: the local profile's recipe."""
    from lib.tasks import cdm
    from lib.tokenizers import train_bpe

    spec = cdm.CDMSpec(levels=(1, 4, 8), format="words")
    df = cdm.sample_trials(spec, 300, seed=0)
    tok = train_bpe([p + a for p, a in zip(cdm.prompts(df, spec), cdm.answers(df, spec))], vocab_size=360)
    local_cache["install"](tok, ["smollm2-135m-instruct"])
    small = dict(n_seeds=2, train_size=32, val_size=8, test_size=16, heldout_size=8, levels=[1, 4, 8],
                 batch_size=8, eval_every=2, warmup_steps=0, tuned_max_steps=2, scratch_max_steps=2, probe_folds=2,
                 bf16=False, device="cpu")
    ns = run_notebook("01_lin", "local", small)
    cfg, base, runs = ns["cfg"], ns["base"], ns["runs"]
    assert cfg.lora_rank == 8 and cfg.freeze_embeddings and cfg.prompt_format == "words"
    assert local_cache["loaded"] == ["smollm2-135m-instruct"] and base.key == "local:smollm2-135m-instruct"
    assert models.family_of(base.model) == "llama"
    tuned = runs["tuned"][0].model
    assert not any("lora_" in n for n, _ in tuned.named_parameters())  # adapters merged before use
    assert torch.equal(tuned.get_input_embeddings().weight, base.model.get_input_embeddings().weight)  # frozen
    changed = [not torch.equal(p, q) for (n, p), (_, q) in zip(tuned.named_parameters(), base.model.named_parameters())
               if "q_proj" in n or "v_proj" in n]
    assert any(changed)
    assert ns["states"]["base"][0].shape == (cfg.test_size, 32)
    assert finite(ns["sim"]["cka"]) and finite(ns["learn"]["test_acc"])
    check_verdicts(ns["verdicts"])
    assert ns["record"]["profile"] == "local" and (local_cache["results"] / "01_lin.json").exists()
    # what the synthesis page (06, local profile) reads: the same runs, from the cache only
    pairs = ns["build"].synthesis_pairs("local", small)
    assert [p["name"] for p in pairs] == ["lin_tuned", "lin_scratch"]
    assert pairs[0]["metric"](pairs[0]["tuned"], pairs[0]["inputs"]) == pytest.approx(runs["tuned"][0].metrics["test_acc"])


# ------------------------------------------------------------------------------------------------ 02_zhao
def test_zhao_local_profile(local_cache):
    """Gemma-3 (the local profile's packaged model) with LoRA on q/v: E0 -> E1 and the controls, CKA, probes,
    claims and the results record."""
    from lib.tokenizers import train_bpe
    from tests.test_zhao import TEXTS

    tok = train_bpe(TEXTS, vocab_size=300)
    local_cache["install"](tok, ["gemma-3-270m"])
    # topic (WordNet) and the translation cluster held out, as in local.yaml; the other tasks' example pools take
    # seconds to build
    small = {"tasks": ["topic", "num2words", "words2num"], "held_out": ["num2words", "words2num"],
             "synthesis_task": "topic", "n_train": 12, "n_test": 8, "control_steps": 2, "e1_steps": 3,
             "batch_size": 4, "max_len": 48, "device": "cpu", "bf16": False, "threads": 1}
    ns = run_notebook("02_zhao", "local", small)
    cfg, res = ns["cfg"], ns["res"]
    assert cfg.lora_rank == 8 and cfg.lora_targets == ("q_proj", "v_proj") and cfg.base_source == "local:gemma-3-270m"
    assert local_cache["loaded"] == ["gemma-3-270m"]
    assert res.n_layers == 2 and res.n_test == 8
    e1 = res.cka[("debiased", "E1")]
    assert e1.shape == (cfg.n_seeds, 3, 2) and finite(e1)
    assert res.accuracy["accuracy"].between(0, 1).all() and set(res.accuracy.model) == {"E0", "E1", "C"}
    check_verdicts(ns["verdicts"])
    assert ns["record"]["profile"] == "local" and (local_cache["results"] / "02_zhao.json").exists()


# ------------------------------------------------------------------------------------------------ 03_prakash
def test_prakash_local_profile(local_cache):
    """The packaged Gemma-3 as the base (no training on the task), LoRA fine-tunes `arith_bound`, `arith_pure` and
    `track`, circuit discovery, faithfulness, DCM, CMAP and knock-outs on 2 blocks x 4 heads."""
    from lib.tasks import entities as E
    from lib.tokenizers import train_bpe
    from tests.test_prakash import SMALL

    words = ("apple", "book", "car", "cup", "dog", "egg", "fish", "hat", "key", "lamp", "map", "pen", "ring", "shoe")
    v = E.Vocab(words, E.LABELS)
    b = E.sample(v, 500, 3, np.random.default_rng(0))
    tok = train_bpe([p + a for p, a in zip(E.prompts(v, b), E.answers(v, b))] * 2, vocab_size=360)
    local_cache["install"](tok, ["gemma-3-270m"])
    ns = run_notebook("03_prakash", "local", {**SMALL, "objects": "vocab", "arith_steps": 2,
                                               "track_steps": 2, "batch_size": 4, "bf16": False})
    cfg, runs = ns["cfg"], ns["runs"]
    assert cfg.local_model == "gemma-3-270m" and cfg.lora_rank == 8
    assert local_cache["loaded"] == ["gemma-3-270m"] and ns["pre"].key == "local:gemma-3-270m"
    seed = cfg.seeds[0]
    assert set(runs[seed]) == {"base", *cfg.tuned}
    base = runs[seed]["base"]  # the packaged model itself is the base, untrained
    assert base.model is ns["pre"].model and base.key == "local:gemma-3-270m" and models.family_of(base.model) == "gemma3"
    assert all(0 <= runs[seed][k].metrics["objective_acc"] <= 1 for k in cfg.tuned)
    assert finite(ns["acc"]["accuracy"]) and ns["faith"]["random_acc"].between(0, 1).all()
    check_verdicts(ns["claims"])
    assert ns["record"]["profile"] == "local" and (local_cache["results"] / "03_prakash.json").exists()


# ------------------------------------------------------------------------------------------------ 04_tzach
def test_tzach_local_profile(local_cache):
    """APT per block of the packaged causal LM (SmolLM2: Llama family) on held-out English blocks; the masked-LM
    sections are skipped (no BERT there) and the one local rule decides."""
    from lib.tokenizers import train_bpe

    local_cache["install"](train_bpe(fake_corpora()["english"].docs, vocab_size=300), ["smollm2-135m-instruct"])
    ns = run_notebook("04_tzach", "local", {"local_rows": 8, "local_n_ctx": 64, "apt_top_k": 10, "device": "cpu"})
    s, local = ns["s"], ns["local"]
    assert local_cache["loaded"] == ["smollm2-135m-instruct"] and s.base is None
    assert s.local[1].shape == (8, 64) and models.family_of(s.local[0]) == "llama"
    assert local is not None and len(local) and finite(local.select_dtypes("number").to_numpy())
    check_verdicts(ns["verdicts"])
    assert ns["record"]["profile"] == "local" and (local_cache["results"] / "04_tzach.json").exists()


# ------------------------------------------------------------------------------------------------ 00_base_models
def test_base_models_local_profile(local_cache):
    """Both packaged models (Llama and Gemma-3 families) loaded twice (conversion, then the cached copy) and scored
    on held-out English blocks; nothing trained."""
    from lib.tokenizers import train_bpe

    local_cache["install"](train_bpe(fake_corpora()["english"].docs, vocab_size=300))
    ns = run_notebook("00_base_models", "local", {"n_ctx": 32, "eval_blocks": 4})
    assert sorted(set(local_cache["loaded"])) == sorted(FAMILY) and len(local_cache["loaded"]) == 4
    assert {n: models.family_of(b["model"]) for n, b in ns["bases"].items()} == FAMILY
    summary = ns["summary"]
    assert len(summary) == 2 and finite(summary.select_dtypes("number").to_numpy())
    assert (local_cache["results"] / "base_models.json").exists()


def test_tzach_local_text_when_no_type_is_frequent_enough():
    """Few local_rows: no token type reaches MIN_OCCURRENCES, every ⟨APT⟩ is NaN; the page says so instead of
    failing in idxmax."""
    import pandas as pd

    from lib.chapters.tzach import report

    df = pd.DataFrame({"block": [0, 1, 2], "mean_apt": [float("nan")] * 3, "apt_top": [0.1, 0.2, 0.3],
                       "accuracy": [0.1, 0.2, 0.3]})
    assert "raise local_rows" in report.text_local(df).data
    df["mean_apt"] = [0.1, 0.5, 0.3]
    assert "highest at layer 1" in report.text_local(df).data
