"""The paper's claims, stated once, and the rules that decide them (lib.claims).

Every rule reads per-seed effects and decides from their 95 % t-interval (`lib.stats.effect`, `claims.by_interval`):
"reproduced" when the interval lies above the rule's margin, "not reproduced" when it lies at or below it,
"inconclusive" when it straddles it or there are too few seeds. Three gates come first:

- a stated precondition (enough layers for a depth claim; E1 learned its tasks; the task set has what the claim
  compares) that fails gives "not testable at this scale" (`Rule.gate`);
- MOSSA reads a control C_t as the task-specific model of task t, so only tasks whose control beat the base's
  accuracy by more than `LEARNED_MARGIN` in every seed enter a claim; a claim about E1 also needs E1 to beat the
  base by as much on the task in every seed (a model that did not learn a task says nothing about how it learned
  it). The other tasks are excluded and counted, and a claim left with too few learned tasks is "inconclusive";
- the CKA estimator: the biased estimator (the paper's) is inflated when the number of prompts n is not much
  larger than the width d, so the verdicts read the debiased one unless n >= `BIASED_MIN_RATIO` x d. Each claim is
  also decided with the other estimator; `extra["flips_between_estimators"]` marks a verdict that changes.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from lib import stats
from lib.claims import (INCONCLUSIVE, NOT_REPRODUCED, PARTLY, REPRODUCED, Claim, Requirement, Rule,
                        by_interval, from_bool)
from lib.chapters.zhao import measure
from lib.chapters.zhao.measure import Results
from lib.tasks import instructions as tasks_mod

PAPER = "Zhao, Ziser & Cohen 2024 (EMNLP), Layer by Layer"
PAPER_GROUPS = {"shared": (1, 9), "transition": (10, 15), "refinement": (16, 32)}  # layers of Llama-2-7B's 32
PAPER_LAYERS = 32
PAPER_TRANSITION = ((PAPER_GROUPS["transition"][0] - 1) / PAPER_LAYERS, PAPER_GROUPS["transition"][1] / PAPER_LAYERS)

LEVEL = stats.LEVEL
LEARNED_MARGIN = 0.05  # a model learned a task: its accuracy beats the base's by more than this, in every seed
MIN_LEARNED = 3  # learned tasks a claim over the seen tasks needs
MIN_PER_KIND = 1  # learned tasks of each kind, within one answer type, the semantic-vs-structured claims need
MIN_UNSEEN = 1  # learned held-out tasks the unseen-task claim needs
BIASED_MIN_RATIO = 10  # verdicts read the biased CKA only when n_test >= this x d_model
SHARED_BELOW, REFINE_FROM = 0.33, 0.67  # layer groups: gain share (of the maximum) that ends shared / starts refinement
MAJORITY = 0.5  # layer groups: the paper's grouping must be found in more than this share of seeds and of resamples
RESAMPLES = 1000  # layer groups: bootstrap resamples of the tasks
RESAMPLE_SEED = 0
UNSEEN_SHARE = 0.5  # the unseen-task gain must exceed this share of the seen-task gain

_LEARNED = "only tasks whose control beats the base's accuracy by more than {learned} in every seed count"
_BOTH = "only tasks on which both the control and E1 beat the base's accuracy by more than {learned} in every seed count"
E1_LEARNED = Requirement("E1's accuracy gain over E0 on the seen tasks", "e1_gain", at_least=LEARNED_MARGIN)

FALLS = Rule(
    "pretrained_similarity_falls_with_depth",
    claim="Sanity check: the pre-trained model's similarity to single-task controls is high in early layers and "
          "falls in later ones (any fine-tune changes later layers more, so this says little about multi-task "
          "learning).",
    paper="qualitative (CKA high early, decreasing with depth)",
    test="per seed, E0-C_t CKA at the first layer minus at the last, averaged over tasks (" + _LEARNED + "; at least "
         "{min_tasks}): reproduced when the {level:.0%} interval of its mean lies above {margin}",
    constants={"margin": 0.05, "level": LEVEL, "learned": LEARNED_MARGIN, "min_tasks": MIN_LEARNED},
    requires=(Requirement("layers of the model", "n_layers", at_least=2),))

CLOSER = Rule(
    "sft_closer_to_controls",
    claim="The instruction-tuned model is much closer to the single-task controls than the pre-trained model.",
    paper="qualitative (much higher CKA across layers)",
    test="per seed, CKA(E1, C_t) - CKA(E0, C_t) averaged over layers and seen tasks (" + _BOTH + "; at least "
         "{min_tasks}): reproduced when the {level:.0%} interval of its mean lies above {margin}",
    constants={"margin": 0.05, "level": LEVEL, "learned": LEARNED_MARGIN, "min_tasks": MIN_LEARNED},
    requires=(E1_LEARNED,))

BEYOND = Rule(
    "closer_than_other_tasks_controls",
    claim="The instruction-tuned model's similarity to a task's control is task-specific: it exceeds what controls "
          "of other tasks, tuned in the same format, share with that control.",
    paper="not tested in the paper (MOSSA's cross-task baseline)",
    test="per seed, CKA(E1, C_t) minus the cross-task baseline (the mean over s != t of CKA(C_s, C_t) on t's "
         "prompts), averaged over layers and seen tasks (" + _BOTH + "; at least {min_tasks}): reproduced when "
         "the {level:.0%} interval of its mean lies above {margin}",
    constants={"margin": 0.0, "level": LEVEL, "learned": LEARNED_MARGIN, "min_tasks": MIN_LEARNED},
    requires=(E1_LEARNED,))

KINDS = Rule(
    "semantic_tasks_already_encoded",
    claim="Semantic tasks (sentiment, paraphrase) are already encoded by pre-training; structured-output tasks "
          "(translation, summarisation) need instruction tuning.",
    paper="qualitative (high vs low E0-C_t CKA)",
    test="per seed, E0-C_t CKA over layers of the semantic tasks minus the structured ones, within one answer "
         "type (label or generation; averaged over the types holding both kinds) (" + _LEARNED + "; at least "
         "{min_kind} of each kind in a type): reproduced when the {level:.0%} interval of its mean lies above "
         "{margin}",
    constants={"margin": 0.05, "level": LEVEL, "learned": LEARNED_MARGIN, "min_kind": MIN_PER_KIND},
    requires=(Requirement("answer types holding both kinds among the chosen tasks", "n_comparable_types",
                          at_least=1),))

ENCODED = Rule(
    "semantic_tasks_decodable_from_the_base",
    claim="Measured directly: a linear probe reads semantic tasks' answers off the pre-trained model's states about "
          "as well as off their controls', structured tasks' answers much less well.",
    paper="qualitative (the paper infers encoding from CKA; this probes it)",
    test="per task, the encoding deficit = best-layer accuracy of a linear probe ({folds}-fold cross-validated, "
         "the label or the first answer token read at the last prompt token) on C_t's states minus on E0's; per "
         "seed, the structured tasks' deficit minus the semantic tasks', within one answer type (" + _LEARNED +
         "; at least {min_kind} of each kind in a type): reproduced when the {level:.0%} interval of its mean lies "
         "above {margin}",
    constants={"margin": 0.05, "level": LEVEL, "learned": LEARNED_MARGIN, "min_kind": MIN_PER_KIND,
               "folds": measure.PROBE_FOLDS},
    requires=(Requirement("answer types holding both kinds among the chosen tasks", "n_comparable_types",
                          at_least=1),))

GROUPS = Rule(
    "layer_groups",
    claim="Layers split into shared, transition and refinement groups; the transition sits at about a third of the "
          "depth.",
    paper="layers 1-9 / 10-15 / 16-32 of 32",
    test="on the gain CKA(E1, C_t) - CKA(E0, C_t) of the seen tasks (" + _BOTH + "; at least {min_tasks}), "
         "r = gain / max gain: layers before the first r >= {shared_below} are shared, from the first later "
         "r >= {refine_from} on refinement, between them transition. The paper's grouping: all three groups, the "
         "transition's centre within one layer of the paper's relative depth {lo:.2f}-{hi:.2f}. First the gain "
         "must rise with depth (per seed, mean gain at relative depth >= {late:.2f} minus below {early:.2f}, "
         "{level:.0%} interval above 0; otherwise that reading is the verdict). Then reproduced when the paper's "
         "grouping is found in more than {majority:.0%} of the seeds' curves and of {resamples} bootstrap resamples "
         "of the tasks (seed-mean curve), partly when in one of the two, not reproduced when in neither",
    constants={"shared_below": SHARED_BELOW, "refine_from": REFINE_FROM, "level": LEVEL, "learned": LEARNED_MARGIN,
               "min_tasks": MIN_LEARNED, "early": PAPER_GROUPS["shared"][1] / PAPER_LAYERS,
               "late": PAPER_GROUPS["transition"][1] / PAPER_LAYERS, "lo": PAPER_TRANSITION[0],
               "hi": PAPER_TRANSITION[1], "majority": MAJORITY, "resamples": RESAMPLES},
    requires=(Requirement("layers of the model", "n_layers", at_least=7), E1_LEARNED))

UNSEEN = Rule(
    "unseen_tasks",
    claim="The paper's question: does the tuned model's move towards the controls extend to tasks it never saw? "
          "Here a whole task cluster is held out (no task of its cluster is seen).",
    paper="asked in the paper (its answer and split were not retrieved)",
    test="per seed, E1's CKA gain over E0 (mean over layers) on the held-out tasks minus {share} x its gain on the "
         "seen tasks (its positive part) (" + _LEARNED + "; on the seen tasks E1 must have learned them too; at "
         "least {min_unseen} held-out and {min_tasks} seen): "
         "reproduced when the {level:.0%} interval of its mean lies above {margin}",
    constants={"share": UNSEEN_SHARE, "margin": 0.0, "level": LEVEL, "learned": LEARNED_MARGIN,
               "min_unseen": MIN_UNSEEN, "min_tasks": MIN_LEARNED},
    requires=(Requirement("held-out tasks", "n_held_out", at_least=1),
              Requirement("held-out tasks with a seen task of their cluster", "n_held_out_with_sibling", at_most=0),
              E1_LEARNED))

RULES = (FALLS, CLOSER, BEYOND, KINDS, ENCODED, GROUPS, UNSEEN)


def estimator_for(res: Results) -> str:
    """The CKA estimator the verdicts read: debiased unless the prompts far outnumber the width."""
    return "biased" if res.n_test >= BIASED_MIN_RATIO * res.base["d_model"] else "debiased"


def facts(res: Results) -> dict:
    """The measured values the preconditions read."""
    seen_clusters = {tasks_mod.SPECS[t].cluster for t in res.seen}
    return {"n_layers": res.n_layers, "n_held_out": len(res.held_out),
            "n_held_out_with_sibling": sum(tasks_mod.SPECS[t].cluster in seen_clusters for t in res.held_out),
            "e1_gain": measure.mean_accuracy(res, "E1", res.seen) - measure.mean_accuracy(res, "E0", res.seen),
            "n_comparable_types": len(measure.comparable_types(res.tasks, MIN_PER_KIND))}


@dataclass
class Reading:
    """One rule read with one estimator: the verdict, the per-seed effect it read (if any), why, and details."""
    verdict: str
    effect: stats.Effect | None
    reason: str
    extra: dict = field(default_factory=dict)


def _too_few(what: str, have: list[str], need: int) -> Reading | None:
    if len(have) >= need:
        return None
    return Reading(INCONCLUSIVE, None, f"only {len(have)} {what} learned "
                   f"({', '.join(have) or 'none'}); the rule needs at least {need}")


def _by_effect(values, margin: float, what: str) -> Reading:
    eff = stats.effect(values)
    verdict = by_interval(eff.lo, eff.hi, margin)
    shown = f"{LEVEL:.0%} interval [{eff.lo:.3f}, {eff.hi:.3f}]" if eff.n > 1 else f"one seed ({eff.mean:.3f})"
    side = {REPRODUCED: "above", NOT_REPRODUCED: "at or below"}.get(verdict, "not decidedly above or below")
    return Reading(verdict, eff, f"{what}: {shown} lies {side} {margin:g}")


def _learned(res: Results, tasks) -> list[str]:
    return measure.learned_tasks(res, LEARNED_MARGIN, list(tasks))


def _learned_by_both(res: Results, tasks) -> list[str]:
    """The tasks of `tasks` that both their control and E1 learned (in every seed): what the E1 claims read."""
    e1 = set(measure.learned_tasks(res, LEARNED_MARGIN, list(tasks), model="E1"))
    return [t for t in _learned(res, tasks) if t in e1]


def read_falls(res: Results, est: str) -> Reading:
    tasks = _learned(res, res.tasks)
    if few := _too_few("tasks", tasks, MIN_LEARNED):
        return few
    e0 = res.cka[(est, "E0")][:, measure.task_index(res, tasks)]  # (S, T, L)
    return _by_effect(e0[:, :, 0].mean(1) - e0[:, :, -1].mean(1), FALLS["margin"], "first minus last layer")


def read_closer(res: Results, est: str) -> Reading:
    tasks = _learned_by_both(res, res.seen)
    if few := _too_few("seen tasks", tasks, MIN_LEARNED):
        return few
    return _by_effect(measure.mean_gain(res, est, tasks), CLOSER["margin"], "E1 minus E0")


def read_beyond(res: Results, est: str) -> Reading:
    tasks = _learned_by_both(res, res.seen)
    if few := _too_few("seen tasks", tasks, MIN_LEARNED):
        return few
    r = _by_effect(measure.net_gain_curve(res, est, tasks).mean(1), BEYOND["margin"], "E1 minus cross-task baseline")
    gained, survived = measure.surviving_gains(res, est, tasks)
    r.extra.update(tasks=tasks, gains_per_seed=gained.tolist(), surviving_per_seed=survived.tolist())
    return r


def _too_few_kinds(res: Results) -> tuple[list[str], Reading | None]:
    tasks = _learned(res, res.tasks)
    if measure.comparable_types(tasks, MIN_PER_KIND):
        return tasks, None
    by = ", ".join(f"{a}: " + "/".join(str(sum(1 for t in tasks if (tasks_mod.SPECS[t].answer,
                                                                    tasks_mod.SPECS[t].kind) == (a, k)))
                                       for k in tasks_mod.KINDS) for a in tasks_mod.ANSWER_TYPES)
    return tasks, Reading(INCONCLUSIVE, None, f"no answer type holds {MIN_PER_KIND} semantic and {MIN_PER_KIND} "
                          f"structured tasks whose control learned its task (semantic/structured learned: {by})")


def read_kinds(res: Results, est: str) -> Reading:
    tasks, few = _too_few_kinds(res)
    if few:
        return few
    r = _by_effect(measure.kind_gap(res, est, tasks, MIN_PER_KIND), KINDS["margin"],
                   "semantic minus structured, within an answer type")
    r.extra["answer_types"] = measure.comparable_types(tasks, MIN_PER_KIND)
    return r


def read_encoded(res: Results, est: str) -> Reading:
    """The probe rule reads no CKA: both estimators give the same reading."""
    tasks, few = _too_few_kinds(res)
    if few:
        return few
    gap = measure.deficit_gap(res, tasks, MIN_PER_KIND)
    if not np.isfinite(gap).all():
        return Reading(INCONCLUSIVE, None, "a probe is undefined (fewer than two classes with enough examples)")
    r = _by_effect(gap, ENCODED["margin"], "structured minus semantic encoding deficit, within an answer type")
    r.extra["answer_types"] = measure.comparable_types(tasks, MIN_PER_KIND)
    return r


def _depth_gain(gains: np.ndarray) -> np.ndarray:
    """Per seed: mean gain of the layers at the paper's refinement depth minus those at its shared depth."""
    L = gains.shape[1]
    centre = (np.arange(1, L + 1) - 0.5) / L
    return gains[:, centre >= GROUPS["late"]].mean(1) - gains[:, centre < GROUPS["early"]].mean(1)


def paper_grouping(curve: np.ndarray) -> bool:
    """Does a gain curve (n_layers,) give the paper's grouping: all three groups, the transition's centre within
    one layer of the paper's relative depth?"""
    groups = measure.layer_groups(curve, SHARED_BELOW, REFINE_FROM)
    centre, L = measure.transition_centre(groups), len(groups)
    return all(g in groups for g in PAPER_GROUPS) and bool(
        PAPER_TRANSITION[0] - 1 / L <= centre <= PAPER_TRANSITION[1] + 1 / L)  # False for NaN


def resampled_curves(gains: np.ndarray, n: int = RESAMPLES, seed: int = RESAMPLE_SEED) -> np.ndarray:
    """(n, n_layers): seed-mean gain curves of `n` bootstrap resamples (with replacement) of the tasks of
    `gains` (n_seeds, n_tasks, n_layers)."""
    per_task = gains.mean(0)  # (T, L)
    idx = np.random.default_rng(seed).integers(0, len(per_task), size=(n, len(per_task)))
    return per_task[idx].mean(1)


def read_groups(res: Results, est: str) -> Reading:
    tasks = _learned_by_both(res, res.seen)
    if few := _too_few("seen tasks", tasks, MIN_LEARNED):
        return few
    per_task = measure.task_gains(res, est, tasks)  # (S, T, L)
    gains = per_task.mean(1)
    groups = measure.layer_groups(gains.mean(0), SHARED_BELOW, REFINE_FROM)
    per_seed = [measure.layer_groups(g, SHARED_BELOW, REFINE_FROM) for g in gains]
    centre, L = measure.transition_centre(groups), res.n_layers
    rises = _by_effect(_depth_gain(gains), 0.0, "late minus early gain")
    seeds = float(np.mean([paper_grouping(g) for g in gains]))
    resamples = float(np.mean([paper_grouping(g) for g in resampled_curves(per_task)]))
    found = {"seeds": seeds > MAJORITY, "task resamples": resamples > MAJORITY}
    indicators = {"gain rises with depth": rises.verdict,
                  "paper's grouping in most seeds": from_bool(found["seeds"]),
                  "paper's grouping in most task resamples": from_bool(found["task resamples"])}
    if rises.verdict != REPRODUCED:
        verdict = rises.verdict
    else:
        verdict = {2: REPRODUCED, 1: PARTLY, 0: NOT_REPRODUCED}[sum(found.values())]
    reason = (f"{rises.reason}; the paper's grouping in {seeds:.0%} of {len(gains)} seeds and {resamples:.0%} of "
              f"{RESAMPLES} task resamples (more than {MAJORITY:.0%} needed)")
    ours = " / ".join(f"{g}: " + (", ".join(str(i + 1) for i, x in enumerate(groups) if x == g) or "none")
                      for g in PAPER_GROUPS) + f" (layers of {L}; seed-mean gain)"
    return Reading(verdict, rises.effect, reason,
                   {"groups": groups, "per_seed": per_seed, "indicators": indicators, "ours": ours,
                    "transition_centre": centre if np.isfinite(centre) else None,
                    "share_of_seeds_with_paper_grouping": seeds, "share_of_resamples_with_paper_grouping": resamples,
                    "share_of_seeds_agreeing": float(np.mean([s == groups for s in per_seed])), "tasks": tasks})


def read_unseen(res: Results, est: str) -> Reading:
    held, seen = _learned(res, res.held_out), _learned_by_both(res, res.seen)
    if few := _too_few("held-out tasks", held, MIN_UNSEEN) or _too_few("seen tasks", seen, MIN_LEARNED):
        return few
    unseen_gain, seen_gain = measure.mean_gain(res, est, held), measure.mean_gain(res, est, seen)
    r = _by_effect(unseen_gain - UNSEEN_SHARE * np.clip(seen_gain, 0, None), UNSEEN["margin"],
                   f"unseen gain minus {UNSEEN_SHARE:g} x seen gain")
    net = measure.net_gain_curve(res, est, held).mean(1)
    r.extra.update(unseen_gain=stats.describe(unseen_gain), seen_gain=stats.describe(seen_gain),
                   unseen_net_of_cross_task=stats.describe(net), held_out_learned=held)
    return r


READERS = {FALLS.id: read_falls, CLOSER.id: read_closer, BEYOND.id: read_beyond, KINDS.id: read_kinds,
           ENCODED.id: read_encoded, GROUPS.id: read_groups, UNSEEN.id: read_unseen}


def _excluded(res: Results) -> dict:
    learned, both = _learned(res, res.tasks), _learned_by_both(res, res.seen)
    return {"learned_tasks": learned, "excluded_tasks": [t for t in res.tasks if t not in learned],
            "seen_tasks_e1_did_not_learn": [t for t in res.seen if t in learned and t not in both]}


def decide(rule: Rule, res: Results, measured: dict | None = None) -> Claim:
    """One rule's claim: gated by its preconditions, read with the verdict estimator, checked with the other."""
    measured = facts(res) if measured is None else measured
    if gated := rule.gate(measured):
        gated.extra.update(_excluded(res))
        return gated
    est = estimator_for(res)
    other = "biased" if est == "debiased" else "debiased"
    main, alt = READERS[rule.id](res, est), READERS[rule.id](res, other)
    flips = main.verdict != alt.verdict
    eff = main.effect
    unit = "probe accuracy" if rule is ENCODED else f"{est} CKA"
    ours = main.extra.pop("ours", None) or (f"{eff.text()} ({unit})" if eff else "not decided")
    if flips:
        ours += f"; with {other} CKA: {alt.verdict}"
    extra = {**main.extra, **_excluded(res), "estimator": est, "flips_between_estimators": flips,
             "by_estimator": {est: main.verdict, other: alt.verdict},
             f"{other}_effect": alt.effect.to_dict() if alt.effect else None}
    value, spread, n, interval = (eff.mean, eff.sd, eff.n, (eff.lo, eff.hi) if eff.n > 1 else None) if eff \
        else (None, None, None, None)
    if rule is GROUPS and eff:  # the headline is where the transition sits; the interval read is the rise's
        value, spread, extra["rise_effect"] = main.extra["transition_centre"], None, eff.to_dict()
    return rule.decide(main.verdict, ours, main.reason, extra=extra, value=value, spread=spread, n=n,
                       interval=interval)


def claims(res: Results) -> list[Claim]:
    """Every rule's claim on the measured results."""
    measured = facts(res)
    return [decide(rule, res, measured) for rule in RULES]
