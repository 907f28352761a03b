"""Chapter 4's rules (lib/chapters/tzach/claims.py): for every rule a constructed case where it must pass and one
where it must fail, the cases the earlier rules let through (a model that predicts frequent tokens, a base curve
that the control shares, clusters that the shuffled null forms too, one model), the evaluation-size precondition,
and the readouts' own known answers (the tuned head starts as the logit lens; the null keeps the marginals)."""
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as st

from lib.chapters.tzach import claims as C, measure, probes

R, NR, INC, NT, PARTLY = C.REPRODUCED, C.NOT_REPRODUCED, C.INCONCLUSIVE, C.NOT_TESTABLE if hasattr(
    C, "NOT_TESTABLE") else "not testable at this scale", C.PARTLY
NT = "not testable at this scale"


def _curve(values):
    return pd.DataFrame({"block": range(len(values)), "mean_apt": values})


def _types(kind: str = "learned", n: int = 300, seed: int = 0) -> pd.DataFrame:
    """Per-type table: frequencies spread over 3 decades; 'learned': APT rises with log frequency well above p(t);
    'unigram': a model that only guesses frequent tokens, APT(t) = p(t) (+ binomial noise)."""
    rng = np.random.default_rng(seed)
    freq = np.round(np.geomspace(10, 20_000, n)).astype(int)
    p = freq / freq.sum() * 8  # a peaked prediction distribution: up to ~0.1
    occ = rng.integers(20, 400, n)
    if kind == "learned":
        true_apt = np.clip(0.05 + 0.1 * np.log10(freq) + rng.normal(0, 0.05, n), 0, 1)
    else:
        true_apt = np.clip(p, 0, 1)
    apt = rng.binomial(occ, true_apt) / occ
    return pd.DataFrame({"id": np.arange(n) + 10, "n": occ, "apt": apt, "freq": freq, "control": 0.0,
                         "unigram": np.clip(p, 0, 1)})


def _ev(sizes, null_sizes, sharp=0.2, null_sharp=0.0, seed=0, n_kept=100):
    rng = np.random.default_rng(seed)
    return {"sizes": sizes, "n_kept": n_kept, "null_sizes": null_sizes, "first_block": 1, "last_block": 3,
            "sharpening": (sharp + rng.normal(0, 0.02, 200)).tolist(),
            "null_sharpening": (null_sharp + rng.normal(0, 0.02, 200)).tolist()}


CONTROL = {"sizes": [], "n_kept": 3, "null_sizes": [[]] * 19, "first_block": None, "last_block": 3}


def _finetune(base_slope=0.1, control_slope=0.0):
    return pd.DataFrame([{"task": t, "model": m, "block": b, "seed": s, "chance": 0.2,
                          "accuracy": 0.3 + (base_slope if m == "base" else control_slope) * b + 0.01 * s
                          + (0.001 * b * s if m == "base" else 0.0)}
                         for t in ("topic", "relation") for m in ("base", "control") for b in range(4)
                         for s in range(3)])


def _measured(**over):
    """A record on which every rule decides 'reproduced'; `over` replaces entries."""
    rising = [0.02, 0.05, 0.1, 0.2]
    types = _types()
    m = {"n_layers": 3, "n_positions": 200_000, "types_recovered": 50.0, "n_boot": 300, "loss_gap": 2.0,
         "depth": {"base": _curve(rising), "seed1": _curve([x * 1.1 for x in rising])},
         "frequency": {"types": types, "rho": 0.8, "ci": (0.7, 0.9), "n_types": len(types), "mean_apt": 0.3,
                       "apt_top": 0.4, "k": 50},
         "ws": pd.DataFrame({"rows": [10, 20, 40, 80, 160, 320], "steps": 1,
                             "mean_apt": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06]}),
         "ws_protocol": "same_epochs",
         "clusters": {"base": _ev([2, 2, 3, 2, 2, 3], [[]] * 19), "seed1": _ev([2, 2, 2, 3, 4], [[2]] * 19, seed=1),
                      "control": CONTROL},
         "finetune": _finetune(),
         "confidence": {"topic": {"spearman": 0.02, "spearman_ci": (-0.05, 0.06), "n": 400, "accuracy": 0.8,
                                  "chance": 0.1}}}
    return {**m, **over}


def _v(m) -> dict:
    return {c.id: c.verdict for c in C.claims(m)}


def test_every_rule_passes_on_its_clear_case():
    v = _v(_measured())
    assert set(v) == {r.id for r in C.RULES}
    assert all(x == R for x in v.values()), v


# --------------------------------------------------------------------------------------------------- depth
def test_depth_fails_when_it_falls_and_is_partly_when_it_rises_less_than_threefold():
    assert _v(_measured(depth={"base": _curve([0.2, 0.1, 0.05, 0.02]),
                               "seed1": _curve([0.2, 0.15, 0.1, 0.1])}))["apt_rises_with_depth"] == NR
    weak = [0.1, 0.12, 0.15, 0.2]  # rising, 2x: the old rule (a gap of 0.001) passed this
    assert _v(_measured(depth={"base": _curve(weak), "seed1": _curve(weak)}))["apt_rises_with_depth"] == PARTLY


def test_depth_needs_every_seed_and_more_than_one_model():
    up, down = _curve([0.02, 0.05, 0.1, 0.2]), _curve([0.2, 0.1, 0.05, 0.02])
    assert _v(_measured(depth={"base": up, "seed1": down}))["apt_rises_with_depth"] == INC  # the models disagree
    c = {x.id: x for x in C.claims(_measured(depth={"base": up}))}["apt_rises_with_depth"]
    assert c.verdict == INC and "1 pre-trained model" in c.reason and c.value == pytest.approx(0.2)


# ----------------------------------------------------------------------------------------------- frequency
def test_frequency_a_model_that_only_predicts_frequent_tokens_fails():
    fake = _types("unigram")
    rho = st.spearmanr(fake["freq"], fake["apt"]).statistic
    assert rho > 0.3  # the old rule (Spearman(frequency, APT) above 0.3) would call this reproduced
    m = _measured(frequency={**_measured()["frequency"], "types": fake, "rho": rho})
    assert _v(m)["apt_rises_with_frequency"] == NR


def test_frequency_fails_when_the_control_does_as_well():
    t = _types()
    m = _measured(frequency={**_measured()["frequency"], "types": t.assign(control=t["apt"])})
    assert _v(m)["apt_rises_with_frequency"] == NR


# ------------------------------------------------------------------------------------------------ clusters
def test_small_clusters_fail_when_the_null_or_the_control_forms_them_too():
    m = _measured()
    same = {k: {**e, "null_sizes": [e["sizes"]] * 19} for k, e in m["clusters"].items() if k != "control"}
    ctl = {**CONTROL, "sizes": [2, 2, 3, 2, 2, 3]}
    assert _v(_measured(clusters={**same, "control": ctl}))["small_clusters"] == NR
    giant = {k: {**e, "sizes": [40]} for k, e in m["clusters"].items() if k != "control"}
    assert _v(_measured(clusters={**giant, "control": CONTROL}))["small_clusters"] == NR
    one = {"base": m["clusters"]["base"], "control": CONTROL}
    assert _v(_measured(clusters=one))["small_clusters"] == INC and _v(_measured(clusters=one))["clusters_sharpen"] == INC


def test_sharpening_fails_when_the_null_sharpens_more_and_does_not_pass_when_it_matches():
    m = _measured()
    worse = {k: {**e, "null_sharpening": (np.asarray(e["sharpening"]) + 0.1).tolist()}
             for k, e in m["clusters"].items() if k != "control"}
    ctl = {**CONTROL, "first_block": 1, "sharpening": [0.5] * 200}
    assert _v(_measured(clusters={**worse, "control": ctl}))["clusters_sharpen"] == NR
    same = {k: {**e, "null_sharpening": e["sharpening"][::-1]} for k, e in m["clusters"].items() if k != "control"}
    assert _v(_measured(clusters={**same, "control": CONTROL}))["clusters_sharpen"] != R


def _swaps(seed=0):
    """40 types, 60 [MASK] positions each: pairs (2k, 2k+1) are taken for one another 40 % of the time."""
    true = np.repeat(np.arange(10, 50), 60)
    partner = np.where(true % 2 == 0, true + 1, true - 1)
    return true, np.where(np.tile(np.arange(60), 40) < 24, partner, true)  # exactly 24 of each type's 60


def _sinks(seed=0):
    """The same types, but 80 % of predictions go to two sink tokens (98, 99) whatever the truth: the earlier
    rule's "cluster of things the model predicts everywhere"."""
    rng = np.random.default_rng(seed)
    true = np.concatenate([np.repeat(np.arange(10, 50), 60), np.repeat([98, 99], 30)])
    sink = np.where(rng.random(true.size) < 0.5, 98, 99)
    return true, np.where(rng.random(true.size) < 0.2, true, sink)


def test_the_shuffled_null_keeps_marginals_and_separates_real_clusters_from_sinks():
    true, pred = _swaps()
    ev = measure.cluster_tests(true, pred, pred, vocab=100, threshold=0.5, min_count=5, seed=0, n_null=19, n_boot=0)
    assert len(ev["sizes"]) == 20 and max(map(len, ev["null_sizes"])) <= 2
    verdict, ind = C.cluster_verdict(ev, CONTROL)
    assert verdict == R and ind["beyond the null"] == R
    true, pred = _sinks()
    ev = measure.cluster_tests(true, pred, pred, vocab=100, threshold=0.5, min_count=5, seed=0, n_null=19, n_boot=0)
    assert ev["sizes"] == [2]  # the sink pair {98, 99} is a "cluster" ...
    assert C.cluster_verdict(ev, CONTROL)[1]["beyond the null"] == NR  # ... that the null forms as well
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(pred)
    assert np.array_equal(np.bincount(shuffled), np.bincount(pred))


def test_sharpening_bootstrap_of_a_model_that_sharpens():
    true, last = _swaps()
    rng = np.random.default_rng(1)
    first = np.where(rng.random(true.size) < 0.4, rng.integers(10, 50, true.size), true)  # diffuse errors
    ev = measure.cluster_tests(true, last, first, vocab=100, threshold=0.5, min_count=5, seed=0, n_null=3, n_boot=30)
    assert np.nanmean(ev["sharpening"]) > 0.5 and len(ev["null_sharpening"]) == 30
    assert C.sharpen_verdict(ev, CONTROL)[0] == R


# ---------------------------------------------------------------------------------------------- fine-tuning
def test_finetune_reads_base_minus_control():
    assert _v(_measured(finetune=_finetune(0.1, 0.1)))["finetune_rises_with_depth"] == NR  # the control rises too
    assert _v(_measured(finetune=_finetune(-0.05, 0.0)))["finetune_rises_with_depth"] == NR


# --------------------------------------------------------------------------------------------- confidence
@pytest.mark.parametrize("ci, verdict", [((-0.05, 0.06), R), ((0.05, 0.15), INC), ((-0.3, 0.3), INC),
                                         ((0.3, 0.5), NR), ((-0.4, -0.12), NR)])
def test_confidence_is_an_equivalence_test(ci, verdict):
    conf = {"topic": {**_measured()["confidence"]["topic"], "spearman": sum(ci) / 2, "spearman_ci": ci}}
    assert _v(_measured(confidence=conf))["confidence_independent_of_apt"] == verdict


# ----------------------------------------------------------------------------------------- preconditions
def test_a_small_evaluation_leaves_the_apt_claims_untested():
    cl = {c.id: c for c in C.claims(_measured(n_positions=C.MIN_POSITIONS - 1))}
    for rid in ("apt_rises_with_depth", "apt_rises_with_frequency", "apt_rises_with_data", "small_clusters",
                "clusters_sharpen"):
        assert cl[rid].verdict == NT and "selected held-out positions" in cl[rid].precondition, rid
    assert cl["finetune_rises_with_depth"].verdict == R
    assert f"≥ {C.MIN_POSITIONS:g}" in C.DEPTH.text()


def test_an_unlearned_base_is_not_testable():
    m = _measured(types_recovered=1.5, finetune=_finetune().assign(accuracy=0.21))
    m["confidence"] = {"topic": {**m["confidence"]["topic"], "accuracy": 0.12}}
    assert all(c.verdict == NT and c.precondition for c in C.claims(m))


def test_a_base_on_the_frequency_plateau_leaves_the_apt_claims_untestable():
    """Just below the loss gap every APT claim is "not testable", naming the gap; just above, they decide. The
    fine-tuning and confidence claims do not read the masked-LM loss."""
    apt_claims = ("apt_rises_with_depth", "apt_rises_with_frequency", "apt_rises_with_data", "small_clusters",
                  "clusters_sharpen")
    below = {c.id: c for c in C.claims(_measured(loss_gap=C.MIN_LOSS_GAP - 0.01))}
    above = {c.id: c for c in C.claims(_measured(loss_gap=C.MIN_LOSS_GAP + 0.01))}
    for rid in apt_claims:
        assert below[rid].verdict == NT and "unigram" in below[rid].precondition, rid
        assert above[rid].verdict == R, rid
    assert below["finetune_rises_with_depth"].verdict == above["finetune_rises_with_depth"].verdict == R


def test_the_local_extension_is_never_scored_as_a_reproduction():
    (c,) = C.local_claims(pd.DataFrame({"block": range(4), "mean_apt": [0.0, 0.1, 0.2, 0.3]}))
    assert c.verdict == NT and c.value == pytest.approx(0.3)
    assert "4-bit" in c.rule and "instruction-tuned" in c.rule and "guaranteed by the lens" in c.rule


def test_rule_text_states_the_constants():
    assert "(-0.1, 0.1)" in C.CONFIDENCE.text() and f"≥ {C.CLUSTER_THRESHOLD}" in C.SMALL_CLUSTERS.text()
    assert "3.0× block 0" in C.DEPTH.text() and "control" in C.FINETUNE.text() and "unigram" in C.FREQUENCY.text()


# -------------------------------------------------------------------------------------------- readouts
def test_apt_over_well_estimated_types():
    from lib import apt

    true = np.array([1] * 20 + [2] * 20 + [3] * 2)
    pred = np.array([1] * 10 + [0] * 10 + [2] * 20 + [3] * 2)
    assert apt.mean_apt_frequent(true, pred, 20) == (pytest.approx(0.75), 2)  # type 3 (seen twice) left out
    assert apt.mean_apt(true, pred) == pytest.approx((0.5 + 1 + 1) / 3)  # the paper's mean is unchanged


@pytest.mark.models
def test_tuned_head_starts_as_the_logit_lens_and_learns():
    from tests._tiny import tiny_model

    model = tiny_model("bert")
    g = torch.Generator().manual_seed(0)
    h = torch.randn(400, model.config.hidden_size, generator=g)
    head = probes.train_probe(h, torch.zeros(400, dtype=torch.long), 0, 0, 64, 1e-2, init=probes.mlm_readout(model))
    assert torch.equal(probes.probe_predictions(head, h), probes.lens_predictions(model, h))
    y = torch.randint(5, model.config.hidden_size, (400,), generator=g)
    h = torch.nn.functional.one_hot(y, model.config.hidden_size).float() * 5
    head = probes.train_probe(h, y, 0, 200, 128, 1e-2, init=probes.mlm_readout(model))
    assert (probes.probe_predictions(head, h) == y).float().mean() > 0.9
    w = model.cls.predictions.decoder.weight
    assert torch.equal(w, model.bert.embeddings.word_embeddings.weight)  # the model itself is untouched


@pytest.mark.models
def test_pre_ln_readout_applies_the_final_norm():
    import transformers as tf

    cfg = tf.RobertaPreLayerNormConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=40)
    torch.manual_seed(0)
    model = tf.RobertaPreLayerNormForMaskedLM(cfg).eval()
    ids = torch.randint(5, 60, (2, 10))
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
        lens = probes.mlm_readout(model)(out.hidden_states[-1])
    assert torch.allclose(lens, out.logits, atol=1e-5)


@pytest.mark.parametrize("apts, verdict", [
    ([0.01, 0.02, 0.03, 0.04, 0.05, 0.06], R),  # rises at every step of six sizes
    ([0.06, 0.05, 0.04, 0.03, 0.02, 0.01], NR),  # falls at every step
    ([0.0014, 0.0014, 0.0016, 0.0026, 0.0055, 0.048], INC),  # this build's sweep: a tie on the plateau, p = 1/16
    ([0.01, 0.03, 0.02, 0.04, 0.03, 0.05], INC),  # up and down: no sign either way
    ([0.01, 0.02, 0.03], INC),  # three sizes: two steps cannot reach p < 0.05
])
def test_the_ws_rule_is_a_sign_test_over_the_steps(apts, verdict):
    ws = pd.DataFrame({"rows": [10 * 2 ** i for i in range(len(apts))], "steps": 1, "mean_apt": apts})
    assert _v(_measured(ws=ws))["apt_rises_with_data"] == verdict
