"""Tests of lib.chapters.horn (chapter 5: SAE features through fine-tuning and SLERP merging)."""
import numpy as np
import pytest
import torch

from lib import sae as saelib
from lib.config import ConfigError
from lib.chapters import horn

from _tiny import tiny_model


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_loads(profile):
    cfg = horn.Config.load(profile, {"device": "cpu"})
    assert cfg.n_seeds >= 2 and 0 < cfg.threshold <= 1
    assert cfg.merge_t in cfg.ts and cfg.ts == sorted(cfg.ts)


@pytest.mark.parametrize("bad", [{"n_seeds": 1}, {"merge_t": 1.5}, {"device": "tpu"}, {"sweep_ts": [0.0, 2.0]},
                                 {"compare_tokens": 10, "sae_ctx": 24}, {"base_profile": "paper"}])
def test_bad_parameters_raise_one_config_error(bad):
    with pytest.raises(ConfigError):
        horn.Config.load("smoke", bad)


def test_local_profile_uses_the_tiny_base():
    assert horn.Config.load("local", {"device": "cpu"}).base_profile_resolved == "tiny"
    assert horn.Config.load("smoke", {"device": "cpu"}).base_profile_resolved == "smoke"


# ------------------------------------------------------------------------------------------------ token classes
@pytest.mark.parametrize("text, code, want", [
    (" =", True, "punctuation/whitespace"), ("\n    ", True, "punctuation/whitespace"),
    ("():", True, "punctuation/whitespace"),
    (" def", True, "keyword"), (" local", True, "keyword"), (" def", False, "English word"),
    (" 42", False, "number"), ("3.14", True, "number"), (" foo_bar", True, "identifier"),
    (" river", False, "English word"),
])
def test_token_category(text, code, want):
    assert horn.token_category(text, code) == want


def test_feature_categories_follow_the_activation_mass():
    cats = np.array([0, 0, 4, 4, 4, 1])  # token -> category index
    top_idx = np.array([[0, 2, 5], [1, 3, 0], [2, 4, 0]])  # (k=3, d=3)
    top_val = np.array([[5.0, 1.0, 0.0], [4.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    # feature 0: mass 9 on category 0, 1 on category 4; feature 1: all category 4; feature 2 never fires
    assert horn.feature_categories(top_idx, top_val, cats).tolist() == [0, 4, -1]


# ------------------------------------------------------------------------------------------------ accuracy
class _Oracle(torch.nn.Module):
    """Logits that put all mass on the true next token (or on `constant`)."""

    def __init__(self, vocab=11, constant=None):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab, self.constant = vocab, constant

    def forward(self, ids):
        target = ids.roll(-1, dims=1) if self.constant is None else torch.full_like(ids, self.constant)
        return type("Out", (), {"logits": torch.nn.functional.one_hot(target, self.vocab).float()})()


def test_next_token_accuracy_known_answers():
    ids = torch.tensor([[1, 2, 3, 4], [3, 3, 5, 3]])
    assert horn.next_token_accuracy(_Oracle(), ids) == 1.0
    # predicting 3 everywhere: targets are 2 3 4 | 3 5 3 -> 3 of 6 correct
    assert horn.next_token_accuracy(_Oracle(constant=3), ids, batch_size=1) == 0.5


def test_merge_endpoints_and_midpoint():
    lua, stories = tiny_model("mistral", seed=0), tiny_model("mistral", seed=1)
    for t, want in ((0.0, lua), (1.0, stories)):
        merged = horn.merge(lua, stories, t)
        for (name, p), q in zip(merged.state_dict().items(), want.state_dict().values()):
            assert torch.equal(p, q), name
    mid = horn.merge(lua, stories, 0.5).state_dict()
    assert not torch.equal(mid["lm_head.weight"], lua.state_dict()["lm_head.weight"])


# ------------------------------------------------------------------------------------------------ matching
def _cfg(**kw):
    return horn.Config.load("smoke", {"device": "cpu", "min_fires": 1, **kw})


def test_stored_flow_equals_recomputed_flow():
    g = torch.Generator().manual_seed(0)
    base = torch.relu(torch.randn(400, 12, generator=g))
    copies = base[:, :6] + 0.3 * torch.randn(400, 6, generator=g)
    child = torch.cat([copies, torch.relu(torch.randn(400, 5, generator=g)), torch.zeros(400, 1)], 1)
    # 6 noisy copies, 5 new features, 1 dead
    feats = {"a": base, "b": child}
    arrays = {"a__alive": np.ones(12, bool), "b__alive": (child > 0).sum(0).numpy() > 0}
    cfg = _cfg()
    comp = {**arrays, **horn._edge("a", "b", feats, arrays, cfg, torch.device("cpu"))}
    assert horn.shares(comp, "a", "b") == horn.shares(comp, "a", "b", cfg.threshold)
    corr = saelib.feature_correlations(base, child)
    for t in (0.3, 0.6, 0.9):
        flow = saelib.feature_flow(corr, t, torch.as_tensor(arrays["a__alive"]), torch.as_tensor(arrays["b__alive"]))
        got = horn.shares(comp, "a", "b", t)
        assert got["persisting"] == pytest.approx(flow.persisting_share)
        assert got["emerging"] == pytest.approx(flow.emerging_share)
    assert comp["a__b__row_max"][:6].min() > 0.8  # the noisy copies persist
    assert horn.shares(comp, "a", "b")["n_child"] == 11  # the dead feature is left out


def test_case_study_finds_the_planted_feature():
    n = 300
    g = torch.Generator().manual_seed(1)
    indicator = torch.rand(n, generator=g) < 0.1
    feats = {}
    for k, name in enumerate(horn.MODELS):
        f = torch.relu(torch.randn(n, 6, generator=g))
        f[:, (k + 2) % 6] = indicator.float() * (1 + 0.1 * torch.rand(n, generator=g))  # planted in a different slot
        feats[name] = f
    cls = {"category": np.zeros(n, np.int64), "assign": indicator.numpy(), "except": np.zeros(n, bool)}
    cfg = _cfg(top_k=3)
    arrays = {}
    for name, f in feats.items():
        arrays.update(horn._summary(name, f, cls, cfg))
    case = horn._case("assign", feats, arrays, torch.device("cpu"))
    assert case["case__assign__match"].tolist() == [2, 3, 4, 5]
    assert case["case__assign__r"].min() > 0.95
    assert arrays["base__except_r"].tolist() == [0.0] * 6  # a constant indicator correlates 0


# ------------------------------------------------------------------------------------------------ the paper path
def _docs():
    english = [f"The river number {i} runs to the sea, and the old town stands by its bank. " * 4 for i in range(24)]
    python = [f"def f{i}(x):\n    y = x + {i}\n    if y > 3:\n        raise ValueError('bad')\n"
              f"    try:\n        return y\n    except KeyError:\n        return None\n" * 2 for i in range(24)]
    stories = [f"Once a fox named Tom{i} met a crow. The crow sang and the fox laughed. " * 4 for i in range(24)]
    lua = [f"local t{i} = {{}}\nfunction t{i}.go(x)\n  local y = x + {i}\n  if y > 3 then return y end\n"
           f"  return nil\nend\n" * 2 for i in range(24)]
    named = (("english", english), ("python", python), ("stories", stories), ("lua", lua))
    return {n: (d[:20], d[20:]) for n, d in named}


def _paper_params(folder):
    return {"hub_base": str(folder), "hub_stories": "", "hub_lua": "", "allow_network": False, "n_ctx": 16,
            "ft_steps": 2, "ft_batch_size": 2, "eval_blocks": 2, "sweep_ts": [0.0, 1.0], "sae_expansion": 2,
            "sae_steps": 4, "sae_batch_size": 64, "sae_tokens": 256, "sae_ctx": 8, "sae_dead_window": 2,
            "sae_eval_tokens": 64, "n_seeds": 2, "compare_tokens": 128, "top_k": 3, "min_fires": 1,
            "device": "cpu", "bf16": False}


@pytest.fixture
def tiny_mistral_folder(tmp_path, monkeypatch):
    """A randomly initialised one-layer Mistral (the paper's family, tiny sizes) and a BPE tokenizer, saved locally."""
    from transformers import MistralConfig, MistralForCausalLM

    from lib.tokenizers import train_bpe

    monkeypatch.setenv("STUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("STUDY_RESULTS", str(tmp_path / "results"))
    docs = _docs()
    tok = train_bpe([d for tr, va in docs.values() for d in tr], vocab_size=300)
    config = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                           num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                           sliding_window=None, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    MistralForCausalLM(config).save_pretrained(tmp_path / "paper-base")
    tok.save_pretrained(tmp_path / "paper-base")
    return tmp_path / "paper-base", docs


@pytest.mark.models
def test_paper_profile_pipeline_on_a_tiny_random_mistral(tiny_mistral_folder):
    folder, docs = tiny_mistral_folder
    cfg = horn.Config.load("paper", _paper_params(folder))
    s = horn.setup(cfg, docs=docs)
    assert s.base.key == f"hub:{folder}"
    sets = horn.model_sets(s)
    ms = sets[0]
    assert sets[1] is sets[0]  # one fine-tune seed unless finetune_seeds
    base_sd, lua_sd = ms["base"].model.state_dict(), ms["lua"].model.state_dict()
    assert any(not torch.equal(base_sd[k], lua_sd[k]) for k in base_sd)  # fine-tuning changed the weights
    acc = horn.accuracy(s, ms)
    assert [r["t"] for r in acc["sweep"]] == cfg.ts
    t0 = acc["sweep"][0]
    assert t0["lua"] == pytest.approx(acc["models"]["lua"]["lua"])  # t = 0 is the Lua model
    saes = horn.train_saes(s, sets)
    assert saes[0]["base"][0].d_sae == 2 * 64 and saes[0]["base"][2] != saes[1]["base"][2]
    comps = horn.compare_all(s, sets, saes)
    assert len(comps) == 2
    for a, b in (*horn.EDGES, horn.CONTROL):
        sh = horn.shares(comps[0], a, b)
        assert 0 <= sh["persisting"] <= 1 and sh["persisting"] + sh["disappearing"] == pytest.approx(1)
    claims = horn.claims(comps, acc, cfg)
    ids = {c.id for c in claims}
    assert ids >= {"few_persist", "generic_persist", "assignment_universal", "exception_no_lua_match"}
    record = horn.write_results(claims, ms, saes, cfg)
    assert record["models"]["base"]["d_mlp"] == 64
    # a second pass is served from the cache
    again = horn.finetune(s, "lua", cfg.ft_seed(0))
    assert again.key == ms["lua"].key


@pytest.mark.models
def test_a_lossless_sae_recovers_all_the_loss(tiny_mistral_folder):
    folder, docs = tiny_mistral_folder
    cfg = horn.Config.load("paper", _paper_params(folder))
    s = horn.setup(cfg, docs=docs)
    d = 64
    sae = saelib.SparseAutoencoder(d, 2 * d)
    with torch.no_grad():  # ReLU(x) - ReLU(-x) = x: an exact reconstruction
        sae.W_enc.copy_(torch.cat([torch.eye(d), -torch.eye(d)], 1))
        sae.W_dec.copy_(torch.cat([torch.eye(d), -torch.eye(d)], 0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    m = horn.evaluate_sae(s, s.base, sae)
    assert m["fve"] == pytest.approx(1.0, abs=1e-6)
    assert m["loss_recovered"] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.models
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sae_and_matching_run_on_cuda(tiny_mistral_folder):
    folder, docs = tiny_mistral_folder
    cfg = horn.Config.load("paper", {**_paper_params(folder), "device": "cuda", "bf16": True})
    s = horn.setup(cfg, docs=docs)
    sets = horn.model_sets(s)
    saes = horn.train_saes(s, sets)
    assert saes[0]["base"][0].W_enc.is_cuda
    comps = horn.compare_all(s, sets, saes)
    assert 0 <= horn.shares(comps[0], "base", "lua")["persisting"] <= 1


def test_bf16_sae_training_learns_like_float32():
    g = torch.Generator().manual_seed(0)
    directions = torch.linalg.qr(torch.randn(16, 16, generator=g))[0][:8]
    acts = (torch.rand(2048, 8, generator=g) < 0.15) * (0.5 + torch.rand(2048, 8, generator=g)) @ directions
    scfg = saelib.SAEConfig(d_in=16, d_sae=32, l1_coefficient=0.05, lr=3e-3, batch_size=256, n_steps=200)
    mse = {bf16: np.mean(horn.fit_sae(acts, scfg, bf16)[1]["mse"][-20:]) for bf16 in (False, True)}
    assert mse[False] < 0.3  # it learned
    assert mse[True] < 1.3 * mse[False]  # and bf16 learned too (a cached bf16 weight copy would not)


def test_correlate_with_matches_lib_sae():
    g = torch.Generator().manual_seed(3)
    F = torch.relu(torch.randn(500, 7, generator=g)).to(torch.bfloat16)
    F[:, 3] = 0  # never fires
    X = np.stack([(torch.rand(500, generator=g) < 0.2).numpy(), np.zeros(500, bool)], 1)  # second one constant
    got = horn.correlate_with(F, X, chunk=128)
    want = saelib.feature_correlations(F.float(), torch.as_tensor(X, dtype=torch.float32)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert got[3].tolist() == [0.0, 0.0] and (got[:, 1] == 0).all()
