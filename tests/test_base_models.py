"""The base-models study: configs resolve, and the data helpers give well-formed training tensors."""
import pytest

from lib.config import ConfigError
from lib import bases as study


def test_arch_follows_config():
    cfg = study.Spec.load("smoke")
    gpt, bert, one = (cfg.arch(n) for n in study.NAMES)
    assert (gpt.family, bert.family, one.family) == ("gpt2", "roberta-prelayernorm", "mistral")
    assert study.Spec.load("smoke", {"bert_family": "bert"}).arch("bert").family == "bert"  # post-LN on request
    assert one.n_layers == 1 and gpt.n_layers == cfg.gpt_n_layers and bert.d_mlp == 4 * bert.d_model
    assert {a.d_vocab for a in (gpt, bert, one)} == {cfg.vocab_size}


def test_heads_must_divide_width():
    with pytest.raises(ConfigError, match="gpt_d_model"):
        study.Spec.load("smoke", {"gpt_d_model": 30, "gpt_n_heads": 4})


def test_unknown_base_name():
    with pytest.raises(ConfigError, match="unknown base model"):
        study.get("gpt3", study.Spec.load("smoke"))


@pytest.mark.models
def test_mlm_eval_masking_is_fixed_and_skips_specials():
    import torch

    ids = torch.randint(5, 100, (8, 32))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    val = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    a = study._mlm_eval_batch(val, 4, 100, seed=0)
    b = study._mlm_eval_batch(val, 4, 100, seed=0)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert (a["labels"][:, 0] == -100).all() and (a["labels"][:, -1] == -100).all()
    assert 0.05 < (a["labels"] != -100).float().mean() < 0.3


def test_local_profile_loads_the_packaged_models_instead_of_training(monkeypatch):
    """The page's `build` (what notebook 00_base_models calls) reaches the local branch: it never trains a base."""
    from lib.bases import core
    from lib.chapters import base_models as page

    loaded = []
    monkeypatch.setattr(core, "get_local", lambda name, cfg: loaded.append(name) or {"name": name})
    monkeypatch.setattr(core, "get_all", lambda cfg: (_ for _ in ()).throw(AssertionError("trained a base")))
    out = page.build(study.Spec.load("local"))
    assert loaded == list(core.LOCAL_MODELS) and set(out) == set(core.LOCAL_MODELS)
    monkeypatch.setattr(core, "get_all", lambda cfg: {"gpt": "trained"})
    assert page.build(study.Spec.load("smoke")) == {"gpt": "trained"}


def test_mlm_loss_is_token_weighted_over_selected_positions():
    """Batching does not change the loss: it equals one pass's summed cross-entropy over the labelled positions."""
    import torch

    from lib.bases import core
    from tests._tiny import tiny_model

    model = tiny_model("bert").train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 97, (7, 12), generator=g)
    labels = torch.full_like(ids, -100)
    labels[:, ::3] = ids[:, ::3]
    mask = torch.ones_like(ids)
    with torch.no_grad():
        model.eval()
        logits = model(ids, attention_mask=mask).logits
        want = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100).item()
        model.train()
    for bs in (1, 3, 16):
        assert abs(core.mlm_loss(model, {"input_ids": ids, "labels": labels}, mask, bs) - want) < 1e-5
    assert model.training  # its mode is kept
