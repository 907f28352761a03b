"""lib.train: config validation, schedules, MLM masking, determinism, objectives, LoRA, evaluation helpers."""
import dataclasses
import math

import pytest
import torch

from lib.models import ModelConfig, build_model, save_model
from lib import train as T
from lib.train import (History, TrainConfig, evaluate, lm_loss, loop_overhead, lr_at, mask_tokens, merge_lora,
                       perplexity, train, unigram_baseline)
from tests._tiny import tiny_inputs, tiny_model

V = 64


def tiny(family="gpt2", seed=0, **overrides):
    base = dict(family=family, d_model=32, n_layers=2, n_heads=4, d_mlp=64, n_ctx=16, d_vocab=V)
    return build_model(ModelConfig(**{**base, **overrides}), seed=seed)


def cfg(**overrides) -> TrainConfig:
    return TrainConfig(**{**dict(objective="causal_lm", n_steps=5, batch_size=4, lr=1e-2, progress=False),
                          **overrides})


def ids(n=8, t=12, seed=0, low=5):
    return torch.randint(low, V, (n, t), generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------ pure functions
@pytest.mark.parametrize("field, value", [
    ("objective", "seq2seq"), ("n_steps", 0), ("batch_size", 1.5), ("lr", 0), ("weight_decay", -1),
    ("warmup_steps", 6), ("schedule", "step"), ("grad_clip", -0.1), ("eval_every", -1), ("seed", -1),
    ("bf16", 1), ("mlm_probability", 1.0), ("lora_rank", -2), ("lora_alpha", 0), ("lora_targets", ("",)),
    ("freeze_embeddings", "no"), ("progress", None), ("desc", 3),
])
def test_invalid_train_config_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        cfg(**{field: value})


def test_train_config_normalises_targets():
    assert cfg(lora_targets=["q_proj", "v_proj"]).lora_targets == ("q_proj", "v_proj")
    assert cfg(lora_targets="c_attn").lora_targets == ("c_attn",)


def test_cosine_schedule_with_warmup():
    c = cfg(n_steps=12, warmup_steps=2, schedule="cosine", lr=1.0)
    lrs = [lr_at(s, c) for s in range(12)]
    assert lrs[:3] == [0.5, 1.0, 1.0]
    assert lrs[2 + 5] == pytest.approx(0.5)  # half way through the decay
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 9 / 10))) and lrs[-1] > 0
    assert all(a >= b for a, b in zip(lrs[1:], lrs[2:]))
    assert [lr_at(s, cfg(n_steps=4, schedule="linear", lr=1.0)) for s in range(4)] == [1.0, 0.75, 0.5, 0.25]
    assert {lr_at(s, cfg(lr=3e-4)) for s in range(5)} == {3e-4}


def test_mask_tokens_80_10_10_and_specials():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(5, 1000, (256, 128), generator=g)
    x[:, 0], x[:, -1], x[:, -20:-1] = 2, 3, 0  # [CLS] ... [SEP] then padding
    special = torch.isin(x, torch.tensor([0, 2, 3, 4]))
    masked, labels = mask_tokens(x, 4, 1000, special, 0.15, g)
    selected = labels != -100
    assert not selected[special].any() and torch.equal(masked[special], x[special])
    assert torch.equal(labels[selected], x[selected])
    assert selected[~special].float().mean().item() == pytest.approx(0.15, abs=0.005)
    picked, original = masked[selected], x[selected]
    n = len(picked)
    assert (picked == 4).sum().item() / n == pytest.approx(0.8, abs=0.015)
    assert (picked == original).sum().item() / n == pytest.approx(0.1 + 0.1 / 1000, abs=0.01)
    assert ((picked != 4) & (picked != original)).sum().item() / n == pytest.approx(0.1, abs=0.01)
    assert torch.equal(masked[~selected], x[~selected])


def test_mask_tokens_is_seeded_and_never_empty():
    x = ids(4, 6)
    special = torch.zeros_like(x, dtype=torch.bool)
    a = mask_tokens(x, 4, V, special, 0.15, torch.Generator().manual_seed(1))
    b = mask_tokens(x, 4, V, special, 0.15, torch.Generator().manual_seed(1))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    _, labels = mask_tokens(x[:1, :2], 4, V, special[:1, :2], 1e-6, torch.Generator().manual_seed(0))
    assert (labels != -100).sum() == 1  # an empty selection would make the loss NaN


def test_unigram_baseline_known_answer():
    assert unigram_baseline([0, 0, 1], [0], 3) == pytest.approx(-math.log(3 / 6))  # add-one: (2+1)/(3+3)
    assert unigram_baseline(torch.tensor([[1, 1]]), torch.tensor([[2, -100]]), 3) == pytest.approx(-math.log(1 / 5))


def test_history_frame():
    h = History(steps=[1, 2, 3], train_loss=[3.0, 2.0, 1.0], lr=[1.0] * 3, evals=[{"step": 2, "acc": 0.5}],
                tokens_seen=30, train_time=2.0)
    frame = h.to_frame()
    assert list(frame.columns) == ["train_loss", "lr", "eval_acc"] and frame.loc[2, "eval_acc"] == 0.5
    assert math.isnan(frame.loc[3, "eval_acc"]) and h.tokens_per_s == 15.0


# ------------------------------------------------------------------------------------------- training runs
@pytest.mark.models
def test_same_seed_gives_bitwise_equal_losses_and_leaves_global_rng():
    data = {"input_ids": ids(16)}
    c = cfg(n_steps=6)
    state = torch.get_rng_state()
    runs = [train(tiny(dropout=0.1), data, c).train_loss for _ in range(2)]
    assert runs[0] == runs[1]
    assert torch.equal(state, torch.get_rng_state())
    assert train(tiny(dropout=0.1), data, dataclasses.replace(c, seed=1)).train_loss != runs[0]


@pytest.mark.models
def test_tiny_model_overfits_tiny_batch():
    model = tiny()
    h = train(model, {"input_ids": ids(4, 12)}, cfg(n_steps=60, batch_size=4, lr=1e-2, eval_every=0))
    assert h.train_loss[-1] < 0.1 < h.train_loss[0]
    assert h.steps == list(range(1, 61)) and h.tokens_seen == 60 * 4 * 12 and h.tokens_per_s > 0
    assert lm_loss(model, ids(4, 12)) < 0.1


@pytest.mark.models
def test_answer_only_loss_masking():
    model = tiny().eval()
    x = ids(3, 10)
    labels = x.clone()
    labels[:, :6] = -100  # prompt: positions 0-5; answer: 6-9
    with torch.no_grad():
        logp = model(x).logits.log_softmax(-1)
    # position t predicts token t + 1, so the answer tokens 6..9 are scored from positions 5..8
    hand = -torch.stack([logp[b, t - 1, x[b, t]] for b in range(3) for t in range(6, 10)]).mean().item()
    assert lm_loss(model, x, labels) == pytest.approx(hand, rel=1e-5)
    assert evaluate(model, {"input_ids": x, "labels": labels}, cfg())["loss"] == pytest.approx(hand, rel=1e-5)
    h = train(model, {"input_ids": x, "labels": labels}, cfg(n_steps=1, batch_size=3))
    assert h.train_loss[0] == pytest.approx(hand, rel=1e-5)  # the first step's loss, before any update


@pytest.mark.models
def test_padding_is_not_trained():
    model = tiny().eval()
    x, mask = ids(2, 8), torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0
    full = lm_loss(model, x, attention_mask=mask)
    labels = x.masked_fill(mask == 0, -100)
    assert full == pytest.approx(lm_loss(model, x, labels, attention_mask=mask))
    h = train(model, {"input_ids": x, "attention_mask": mask}, cfg(n_steps=1, batch_size=2))
    assert h.train_loss[0] == pytest.approx(full, rel=1e-5) and h.tokens_seen == 13


@pytest.mark.models
def test_eval_fn_called_at_expected_steps_in_eval_mode():
    seen = []

    def probe(model):
        seen.append((model.training, torch.is_grad_enabled()))
        return {"probe": float(len(seen))}

    model = tiny()
    h = train(model, {"input_ids": ids()}, cfg(n_steps=10, eval_every=4), eval_data={"input_ids": ids(4, seed=1)},
              eval_fn=probe)
    assert [e["step"] for e in h.evals] == [4, 8, 10] and [e["probe"] for e in h.evals] == [1.0, 2.0, 3.0]
    assert seen == [(False, False)] * 3 and model.training
    assert all(e["loss"] > 0 for e in h.evals)
    assert train(tiny(), {"input_ids": ids()}, cfg(n_steps=3)).evals == []


@pytest.mark.models
def test_masked_lm_objective_trains():
    model = tiny("bert")
    x = ids(16, 12)
    x[:, 0], x[:, -1] = 2, 3
    c = cfg(objective="masked_lm", n_steps=30, batch_size=8, lr=3e-3, mlm_probability=0.3)
    h = train(model, {"input_ids": x}, c, eval_data={"input_ids": x}, mask_token_id=4, special_ids=[0, 2, 3])
    assert all(math.isfinite(v) for v in h.train_loss) and h.evals[-1]["loss"] < math.log(V)
    with pytest.raises(ValueError, match="mask_token_id"):
        train(model, {"input_ids": x}, c)


@pytest.mark.models
def test_classification_beats_chance():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (64,), generator=g)
    x = torch.randint(10, V, (64, 8), generator=g)
    x[:, 1] = 5 + y  # the label is written in the second token: separable
    model = build_model(ModelConfig("bert", 32, 2, 4, 64, 16, V), task="classification", num_labels=2)
    h = train(model, {"input_ids": x, "labels": y}, cfg(objective="classification", n_steps=40, batch_size=16,
                                                        lr=3e-3), eval_data={"input_ids": x, "labels": y})
    assert h.evals[-1]["accuracy"] > 0.9


@pytest.mark.models
def test_lora_trains_only_adapters_and_merges(tmp_path):
    model = tiny()
    base = {k: v.clone() for k, v in model.state_dict().items()}
    train(model, {"input_ids": ids()}, cfg(n_steps=5, lora_rank=4, lora_targets=("c_attn",)))
    lora = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert lora and any(v.abs().sum() > 0 for k, v in lora.items() if "lora_B" in k)  # adapters moved
    for key, value in model.state_dict().items():
        if "lora_" not in key:
            assert torch.equal(value, base[key.replace("base_layer.", "")]), key
    x = ids(2, seed=3)
    with torch.no_grad():
        adapted = model.eval()(x).logits
        with pytest.raises(ValueError, match="merge_lora"):
            save_model(model, None, tmp_path / "m")
        merged = merge_lora(model)
        torch.testing.assert_close(merged(x).logits, adapted, atol=1e-5, rtol=1e-5)
    assert set(merged.state_dict()) == set(base) and all(p.requires_grad for p in merged.parameters())
    assert not torch.equal(merged.state_dict()["transformer.h.0.attn.c_attn.weight"],
                           base["transformer.h.0.attn.c_attn.weight"])
    save_model(merged, None, tmp_path / "m")


@pytest.mark.models
def test_lora_default_targets_for_llama():
    model = tiny("llama")
    train(model, {"input_ids": ids()}, cfg(n_steps=2, lora_rank=2))
    names = {k for k in model.state_dict() if "lora_" in k}
    assert any("q_proj" in k for k in names) and any("v_proj" in k for k in names)
    assert not any("k_proj" in k for k in names)


@pytest.mark.models
def test_freeze_embeddings_and_flags_restored():
    model = tiny()
    wte, block = model.transformer.wte.weight.clone(), model.transformer.h[0].mlp.c_fc.weight.clone()
    train(model, {"input_ids": ids()}, cfg(n_steps=3, freeze_embeddings=True, weight_decay=0.1))
    assert torch.equal(model.transformer.wte.weight, wte) and torch.equal(model.lm_head.weight, wte)
    assert not torch.equal(model.transformer.h[0].mlp.c_fc.weight, block)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.models
def test_bf16_autocast_runs():
    c = cfg(n_steps=4, bf16=True, schedule="cosine", warmup_steps=1)
    h = train(tiny("llama"), {"input_ids": ids()}, c)
    assert all(math.isfinite(v) for v in h.train_loss)
    assert h.lr == [lr_at(s, c) for s in range(4)] and h.lr[0] == pytest.approx(1e-2)


@pytest.mark.models
def test_bad_data_is_rejected():
    model = tiny()
    with pytest.raises(ValueError, match="input_ids"):
        train(model, {"input_ids": ids().float()}, cfg())
    with pytest.raises(ValueError, match="rows"):
        train(model, {"input_ids": ids(), "attention_mask": torch.ones(3, 12)}, cfg())
    with pytest.raises(ValueError, match="unknown data keys"):
        train(model, {"input_ids": ids(), "pixel_values": ids()}, cfg())
    with pytest.raises(ValueError, match="labels"):
        train(model, {"input_ids": ids()}, cfg(objective="classification"))


@pytest.mark.models
def test_perplexity_and_batching():
    model = tiny()
    blocks = ids(5, 10)
    loss = lm_loss(model, blocks, batch_size=2)
    assert loss == pytest.approx(lm_loss(model, blocks, batch_size=5), rel=1e-6)
    assert perplexity(model, blocks, batch_size=3) == pytest.approx(math.exp(loss), rel=1e-6)
    assert model.training  # mode restored


@pytest.mark.models
def test_loop_overhead_reports_both_loops():
    loop, bare, ratio = loop_overhead(lambda: tiny(), {"input_ids": ids(4, 12)}, n_steps=2)
    assert loop > 0 and bare > 0 and ratio == pytest.approx(loop / bare)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
@pytest.mark.parametrize("lora", [False, True])
def test_sparse_answer_loss_equals_hf_loss_and_gradients(family, lora):
    """causal_lm_loss computes logits only where a labelled token is predicted: same loss and gradients as HF's."""
    model = tiny_model(family)
    rows = []  # positions the unembedding sees: only the 5 that predict a labelled token on the sparse path
    model.get_output_embeddings().register_forward_hook(lambda m, i, o: rows.append(i[0].reshape(-1, i[0].shape[-1])))
    if lora:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=2, target_modules=["c_attn"] if family == "gpt2" else ["q_proj"]))
    ids = tiny_inputs(batch=4, seq=10)
    labels = torch.full_like(ids, -100)
    labels[0, 9], labels[1, 5], labels[2, 6:8], labels[3, 1] = ids[0, 9], ids[1, 5], ids[2, 6:8], ids[3, 1]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    ours = T.causal_lm_loss(model, inputs)
    assert len(rows[-1]) == 5
    ours.backward()
    grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
    model.zero_grad()
    theirs = model(**inputs).loss
    theirs.backward()
    assert torch.allclose(ours, theirs, atol=1e-6)
    for g, p in zip(grads, [p for p in model.parameters() if p.requires_grad]):
        assert torch.allclose(g, p.grad, atol=1e-6)
    dense = {**inputs, "labels": ids}  # every position labelled: HF's own path
    assert torch.allclose(T.causal_lm_loss(model, dense), model(**dense).loss)


@pytest.mark.parametrize("family", ["bert", "roberta-prelayernorm"])
def test_masked_lm_loss_equals_hf_loss_and_gradients(family):
    """masked_lm_loss runs the MLM head on the selected positions only: the same loss and gradients as HF's."""
    cfg = ModelConfig(family, d_model=16, n_layers=2, n_heads=2, d_mlp=32, n_ctx=12, d_vocab=50)
    model = build_model(cfg, seed=0).eval()  # eval: no dropout, so both passes see the same network
    decoder_rows = []
    model.get_output_embeddings().register_forward_hook(lambda m, i, o: decoder_rows.append(i[0].reshape(-1, 16)))
    ids = torch.randint(5, 50, (3, 12), generator=torch.Generator().manual_seed(0))
    labels = torch.full_like(ids, -100)
    labels[0, 3], labels[1, 0:4], labels[2, 11] = ids[0, 3], ids[1, 0:4], ids[2, 11]
    inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}
    ours = T.masked_lm_loss(model, inputs)
    assert len(decoder_rows[-1]) == 6  # the decoder saw the six selected positions, not all 36
    ours.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    theirs = model(**inputs).loss
    theirs.backward()
    assert torch.allclose(ours, theirs, atol=1e-6)
    for g, p in zip(grads, model.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_trim_padding_drops_only_columns_padded_in_every_row():
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 0]])
    x, labels = torch.arange(12).reshape(2, 6), torch.tensor([0, 1])
    out = T.trim_padding({"input_ids": x, "attention_mask": mask, "labels": labels})
    assert out["input_ids"].tolist() == [[0, 1, 2], [6, 7, 8]] and out["attention_mask"].shape == (2, 3)
    assert out["labels"] is labels  # (N,) classification labels are not cut
    left = torch.tensor([[0, 1, 1], [1, 1, 1]])  # left padding: nothing trails
    assert T.trim_padding({"input_ids": x[:, :3], "attention_mask": left})["input_ids"].shape == (2, 3)
    assert T.trim_padding({"input_ids": x})["input_ids"] is x


@pytest.mark.models
@pytest.mark.parametrize("family, objective", [("gpt2", "causal_lm"), ("llama", "causal_lm"), ("bert", "masked_lm")])
def test_trimming_changes_no_loss_and_no_weight(family, objective, monkeypatch):
    """Six extra padding columns on every row: trained with trimming, the model is exactly the one trained on the
    untrimmed batches, and (causal models, whose labels hold no random draw) the one trained without those columns."""
    x = ids(8, 10)
    mask = torch.ones_like(x)
    mask[::2, 7:] = 0  # right padding, ragged rows
    pad = lambda t, v: torch.cat([t, torch.full((len(t), 6), v, dtype=t.dtype)], 1)
    labels = x.masked_fill(mask == 0, -100)
    short = {"input_ids": x, "attention_mask": mask}
    wide = {"input_ids": pad(x, 0), "attention_mask": pad(mask, 0)}
    if objective == "causal_lm":
        short["labels"], wide["labels"] = labels, pad(labels, -100)
    kw = dict(mask_token_id=1, special_ids=[0]) if objective == "masked_lm" else {}
    c = cfg(objective=objective, n_steps=4, batch_size=4)

    def run(data):
        model = tiny(family)
        return model, train(model, data, c, **kw)

    runs = [run(wide)]
    if objective == "causal_lm":
        runs.append(run(short))
    with monkeypatch.context() as m:
        m.setattr(T, "trim_padding", lambda inputs: inputs)
        runs.append(run(wide))
    (a, ha), rest = runs[0], runs[1:]
    for b, hb in rest:
        assert ha.train_loss == pytest.approx(hb.train_loss, rel=1e-5) and ha.tokens_seen == hb.tokens_seen
        for (name, p), q in zip(a.named_parameters(), b.parameters()):
            assert torch.allclose(p, q, atol=1e-4), name  # rounding, which Adam amplifies in the key biases (zero grad)
