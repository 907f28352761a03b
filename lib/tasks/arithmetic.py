"""Chapter 3's fine-tuning objectives at this scale: the Goat analogue and its control.

:func:`bound_arithmetic`: sums and differences whose operands are first bound to names ("3 goes to F, 7 goes to Q.
F plus Q is" -> " 10"), the same binding and retrieval by name as the boxes task; :func:`pure_arithmetic`: the same
operations stated directly ("3 plus 7 is" -> " 10"). Labels come from an entities.Vocab; every number and word is
one token of lib.tasks.wordvocab's tokenizer.
"""
from __future__ import annotations

import numpy as np

from lib.tasks.entities import Vocab

ARITH_NAMES = (2, 5)  # names bound per bound-arithmetic prompt: uniform in this range
ARITH_MAX = 9  # operands 0..ARITH_MAX: single digits, so the sums are an addition table of 100 facts (and 55
# differences) that a small model can learn in a short fine-tune


def _operations(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """n sums or differences (half each on average): operands a, b, results, the operator words."""
    a, b = rng.integers(0, ARITH_MAX + 1, n), rng.integers(0, ARITH_MAX + 1, n)
    plus = rng.random(n) < 0.5
    a, b = np.where(plus, a, np.maximum(a, b)), np.where(plus, b, np.minimum(a, b))  # differences stay >= 0
    return a, b, np.where(plus, a + b, a - b), ["plus" if p else "minus" for p in plus]


def bound_arithmetic(vocab: Vocab, n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """n (prompt, answer) pairs: ARITH_NAMES numbers bound to distinct labels, then an operation on two of the labels.

    "3 goes to F, 7 goes to Q, 12 goes to B. Q minus F is" -> " 4" (number first, label second, as object and label
    in the boxes prompt)."""
    a, b, value, ops = _operations(n, rng)
    out = []
    for i in range(n):
        k = int(rng.integers(ARITH_NAMES[0], ARITH_NAMES[1] + 1))
        labels = [vocab.labels[j] for j in rng.permutation(len(vocab.labels))[:k]]
        numbers = [int(x) for x in rng.integers(0, ARITH_MAX + 1, k)]
        first, second = rng.permutation(k)[:2]
        numbers[first], numbers[second] = int(a[i]), int(b[i])
        context = ", ".join(f"{x} goes to {L}" for x, L in zip(numbers, labels))
        out.append((f"{context}. {labels[first]} {ops[i]} {labels[second]} is", f" {value[i]}"))
    return out


def pure_arithmetic(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """n (prompt, answer) pairs of the same operations without names: "3 plus 7 is" -> " 10"."""
    a, b, value, ops = _operations(n, rng)
    return [(f"{a[i]} {ops[i]} {b[i]} is", f" {value[i]}") for i in range(n)]
