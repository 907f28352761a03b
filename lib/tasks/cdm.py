"""A text version of the context-dependent decision (CDM) task of Mante, Sussillo, Shenoy & Newsome (2013).

In the monkey task a random-dot stimulus carries two evidence streams at once, motion (left or right) and colour
(red or green), each with a signed strength (coherence); a cue tells the animal which stream to report. The same
stimulus thus calls for different choices in different contexts, and the irrelevant stream has to be ignored.
Lin (2024, arXiv 2406.18926) adapted the task to text "based on numerical comparison"; the exact prompt is not
published, so this module defines its own (ours, not the paper's):

    context: color. color: 8 vs 1. motion: 3 vs 7. answer: left

Which stream is shown first is drawn at random per trial (column ``first``), so the cue has to select a stream by
its name, not by its position in the prompt. Each stream is a pair of numbers; its signed *evidence* is first minus second (here motion -4, color +7). The
answer is decided by the relevant stream only: ``answers[0]`` (" left") when its first number is the larger,
``answers[1]`` (" right") otherwise. Ties never occur (evidence levels are non-zero).

- **Numbers** are the integers ``lo``..``hi`` (the study uses the digits 0-9, one token each in its BPE and in
  GPT-2's, so a comparison is between two tokens, not two multi-token strings).
- **Difficulty** is |evidence|, drawn from a fixed set of ``levels`` (as Mante's coherence levels), with a random
  sign per stream, so the two streams are independent: half the trials are *congruent* (the irrelevant stream
  points to the same answer) and half *incongruent* (it points to the other one).
- **Held-out comparisons**: the pairs whose numbers sum to ``lo + hi`` (for digits: 0/9, 1/8, 2/7, 3/6, 4/5, in
  both orders, evidence 1 to 9) never appear in a training prompt, in either stream. The held-out split asks for
  them in the relevant stream: a model that learned an ordering of the numbers solves them, one that memorised
  the trained pairs cannot.
- **Splits**: train / validation / test prompts use the other pairs and never share a prompt.
- **Psychometric grid**: every combination of context, motion evidence and colour evidence (both signs, every
  level), for choice-probability curves as in Mante et al.'s Figure 2.

Trials are a pandas DataFrame (one row per trial, columns in :data:`COLUMNS`); :func:`encode` turns them into the
tensors a causal LM trains on: the prompt, then the answer token, right-padded, loss only on the answer token.
"""
from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

CONTEXTS = ("motion", "color")
FORMATS = {
    # the default: readable, as in the research notes' proposal; s1 / s2 are the stream names in shown order
    "words": "context: {context}. {s1}: {a1} vs {b1}. {s2}: {a2} vs {b2}. answer:",
    # half the tokens: small models learn it in far fewer steps; fits the smoke base's 32 positions
    "compact": "context {context}, {s1} {a1} {b1}, {s2} {a2} {b2}:",
}
COLUMNS = ("context", "first", "m1", "m2", "c1", "c2", "motion_ev", "color_ev", "rel_ev", "irr_ev", "choice",
           "congruent", "difficulty")


@dataclass(frozen=True)
class CDMSpec:
    """The task's free choices: the numbers, the evidence levels, the answer strings and the prompt format."""

    lo: int = 0  # smallest number shown
    hi: int = 9  # largest number shown
    levels: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)  # |first - second| of a stream in training prompts
    answers: tuple[str, str] = (" left", " right")  # answers[0]: the relevant pair's first number is larger
    format: str = "words"

    def __post_init__(self):
        object.__setattr__(self, "levels", tuple(int(v) for v in self.levels))
        object.__setattr__(self, "answers", tuple(self.answers))
        if not 0 <= self.lo < self.hi:
            raise ValueError(f"need 0 <= lo < hi, got lo={self.lo}, hi={self.hi}")
        trained = {abs(a - b) for a, b in pairs(self, "train")}
        if not self.levels or not set(self.levels) <= trained:
            raise ValueError(f"levels must be differences of training pairs, {sorted(trained)}; got {self.levels}")
        if len(self.answers) != 2 or self.answers[0] == self.answers[1]:
            raise ValueError(f"answers must be two different strings, got {self.answers}")
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {tuple(FORMATS)}, got {self.format!r}")

    @property
    def signed_levels(self) -> np.ndarray:
        return np.array(sorted([-v for v in self.levels] + list(self.levels)))


# ------------------------------------------------------------------------------------------------ trials
def pairs(spec: CDMSpec, split: str = "train") -> np.ndarray:
    """Ordered number pairs (k, 2), first != second: "heldout" those summing to lo + hi, "train" all others."""
    n = np.arange(spec.lo, spec.hi + 1)
    a, b = (x.ravel() for x in np.meshgrid(n, n, indexing="ij"))
    held = a + b == spec.lo + spec.hi
    keep = (a != b) & (held if split == "heldout" else ~held)
    return np.stack([a[keep], b[keep]], axis=1)


def _pairs_with(spec: CDMSpec, ev: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A training pair (first - second = ev) for each signed evidence value, uniform among those that exist."""
    table = pairs(spec, "train")
    diff = table[:, 0] - table[:, 1]
    out = np.empty((len(ev), 2), dtype=int)
    for value in np.unique(ev):
        rows = np.flatnonzero(ev == value)
        options = table[diff == value]
        out[rows] = options[rng.integers(len(options), size=len(rows))]
    return out


def trials_from_pairs(context, motion: np.ndarray, color: np.ndarray, first) -> pd.DataFrame:
    """Trials from context names (n,), the motion and colour number pairs, each (n, 2), and the stream shown
    first (n,), a name from CONTEXTS."""
    context, first = np.asarray(context), np.asarray(first)
    motion_ev, color_ev = motion[:, 0] - motion[:, 1], color[:, 0] - color[:, 1]
    is_motion = context == "motion"
    rel, irr = np.where(is_motion, motion_ev, color_ev), np.where(is_motion, color_ev, motion_ev)
    return pd.DataFrame({"context": context, "first": first, "m1": motion[:, 0], "m2": motion[:, 1], "c1": color[:, 0],
                         "c2": color[:, 1], "motion_ev": motion_ev, "color_ev": color_ev, "rel_ev": rel, "irr_ev": irr,
                         "choice": (rel < 0).astype(int), "congruent": np.sign(rel) == np.sign(irr),
                         "difficulty": np.abs(rel)})


def trials_from_evidence(spec: CDMSpec, context, motion_ev, color_ev, rng: np.random.Generator,
                         first=None) -> pd.DataFrame:
    """Trials with the given contexts and signed evidence (arrays of equal length); training pairs drawn by `rng`,
    and the stream shown first too unless `first` gives it."""
    motion = _pairs_with(spec, np.asarray(motion_ev, dtype=int), rng)
    color = _pairs_with(spec, np.asarray(color_ev, dtype=int), rng)
    first = rng.choice(CONTEXTS, len(motion)) if first is None else first
    return trials_from_pairs(context, motion, color, first)


def _random_trials(spec: CDMSpec, n: int, rng: np.random.Generator, heldout: bool) -> pd.DataFrame:
    signed, context = spec.signed_levels, rng.choice(CONTEXTS, n)
    if not heldout:
        return trials_from_evidence(spec, context, rng.choice(signed, n), rng.choice(signed, n), rng)
    held = pairs(spec, "heldout")[rng.integers(len(pairs(spec, "heldout")), size=n)]
    other = _pairs_with(spec, rng.choice(signed, n), rng)
    is_motion = (context == "motion")[:, None]
    return trials_from_pairs(context, np.where(is_motion, held, other), np.where(is_motion, other, held),
                             rng.choice(CONTEXTS, n))


def sample_trials(spec: CDMSpec, n: int, seed: int, exclude=(), heldout: bool = False) -> pd.DataFrame:
    """`n` distinct random trials, none whose prompt is in `exclude` (prompt strings, e.g. another split's).

    Training trials: context, level and signs uniform, the two streams independent. `heldout=True`: the relevant
    stream shows a held-out pair (uniform), the irrelevant one a training pair of a uniform level and sign."""
    rng = np.random.default_rng(seed)
    exclude, frames, have = set(exclude), [], set()
    for _ in range(100):
        df = _random_trials(spec, max(2 * (n - len(have)), 16), rng, heldout)
        text = pd.Series(prompts(df, spec))
        keep = ~(text.isin(exclude | have) | text.duplicated()).to_numpy()
        df = df[keep].head(n - len(have))
        have.update(prompts(df, spec))
        frames.append(df)
        if len(have) == n:
            return pd.concat(frames, ignore_index=True)
    raise ValueError(f"could not draw {n} distinct trials from the numbers {spec.lo}..{spec.hi}")


def make_splits(spec: CDMSpec, sizes: dict[str, int], seed: int) -> dict[str, pd.DataFrame]:
    """{"train", "val", "test": disjoint prompts of training pairs; "heldout": held-out pairs in the relevant
    stream}. `sizes` maps split name to number of trials (a missing split is left out)."""
    out, seen = {}, set()
    for i, name in enumerate(("train", "val", "test")):
        if sizes.get(name):
            out[name] = sample_trials(spec, sizes[name], seed + 1000 * i, exclude=seen)
            seen.update(prompts(out[name], spec))
    if sizes.get("heldout"):
        out["heldout"] = sample_trials(spec, sizes["heldout"], seed + 3000, heldout=True)
    return out


def psychometric_trials(spec: CDMSpec, reps: int, seed: int) -> pd.DataFrame:
    """Every (context, motion evidence, colour evidence) combination, `reps` times with fresh training pairs."""
    grid = [(c, m, k) for c in CONTEXTS for m in spec.signed_levels for k in spec.signed_levels] * reps
    context, motion, color = zip(*grid)
    return trials_from_evidence(spec, context, motion, color, np.random.default_rng(seed))


def prompts(df: pd.DataFrame, spec: CDMSpec) -> list[str]:
    """The prompt text of each trial (without the answer)."""
    template, out = FORMATS[spec.format], []
    for r in df.itertuples():
        streams = {"motion": (r.m1, r.m2), "color": (r.c1, r.c2)}
        s1, s2 = (r.first, "color" if r.first == "motion" else "motion")
        (a1, b1), (a2, b2) = streams[s1], streams[s2]
        out.append(template.format(context=r.context, s1=s1, a1=a1, b1=b1, s2=s2, a2=a2, b2=b2))
    return out


def answers(df: pd.DataFrame, spec: CDMSpec) -> list[str]:
    return [spec.answers[c] for c in df["choice"]]


def fingerprint(df: pd.DataFrame, spec: CDMSpec) -> str:
    """16 hex digits identifying the exact prompts and answers (a cache-key ingredient)."""
    blob = "\n".join(p + a for p, a in zip(prompts(df, spec), answers(df, spec)))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ------------------------------------------------------------------------------------------------ tokens
def answer_ids(tokenizer, spec: CDMSpec) -> tuple[int, int]:
    """The token ids of the two answers; ValueError if either is not exactly one token for this tokenizer."""
    ids = [tokenizer(a, add_special_tokens=False)["input_ids"] for a in spec.answers]
    bad = [f"{a!r} -> {tokenizer.convert_ids_to_tokens(i)}" for a, i in zip(spec.answers, ids) if len(i) != 1]
    if bad:
        raise ValueError(f"answers must be single tokens for this tokenizer: {'; '.join(bad)}")
    return ids[0][0], ids[1][0]


def number_tokens(tokenizer, lo: int, hi: int) -> pd.Series:
    """How many tokens each number " n" (n in [lo, hi], with its leading space as in the prompt) takes."""
    return pd.Series({n: len(tokenizer(f" {n}", add_special_tokens=False)["input_ids"]) for n in range(lo, hi + 1)},
                     name="tokens")


def context_sets_length(enc: dict, df: pd.DataFrame) -> bool:
    """True if the prompt length depends on the context (e.g. " motion" two tokens, " color" one): then position
    alone gives the context away, a shortcut the task should not offer."""
    lengths = pd.Series(enc["last"].numpy()).groupby(df["context"].to_numpy()).agg(set)
    return len(set(map(frozenset, lengths))) > 1


def encode(df: pd.DataFrame, spec: CDMSpec, tokenizer) -> dict[str, torch.Tensor]:
    """Tensors for a causal LM: the prompt tokens, then the answer token; right-padded.

    Returns input_ids, attention_mask, labels (all (N, T); labels -100 everywhere but the answer token), last (N,)
    the position of the last prompt token (whose next-token logits give the choice), choice (N,) 0 or 1, and
    answer_ids (2,) the token ids of ``spec.answers``.
    """
    target = answer_ids(tokenizer, spec)
    rows = [tokenizer(p)["input_ids"] + [target[c]] for p, c in zip(prompts(df, spec), df["choice"])]
    T = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(rows), T), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    labels = torch.full((len(rows), T), -100, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
        mask[i, :len(r)] = 1
        labels[i, len(r) - 1] = r[-1]
    last = mask.sum(1) - 2  # the answer sits at len - 1, so the prompt ends one before it
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "last": last,
            "choice": torch.tensor(df["choice"].to_numpy(), dtype=torch.long), "answer_ids": torch.tensor(target)}


def train_tensors(enc: dict) -> dict[str, torch.Tensor]:
    """The keys of :func:`encode`'s output that lib.train consumes."""
    return {k: enc[k] for k in ("input_ids", "attention_mask", "labels")}
