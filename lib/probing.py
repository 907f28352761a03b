"""Linear probes: which properties of the input can a linear read-out recover from a layer's activations?

A probe is a classifier trained on frozen activations X (n, d) to predict a label y (n,) of each input (Alain &
Bengio 2016, "Understanding intermediate layers using linear classifier probes"; review: Belinkov 2022, "Probing
Classifiers: Promises, Shortcomings, and Advances"). Keeping it *linear* (here: L2-regularised logistic regression
on standardised features) asks whether the information is laid out along directions a downstream linear map
could use, not merely whether it is present somewhere. Accuracy is estimated by stratified k-fold
cross-validation, so it is measured on inputs the probe did not fit.

Reading probe accuracies needs two reference points, both returned by :func:`probe_layers`:

- ``chance``: the majority-class rate, the score of a probe that ignores X;
- ``control`` (optional): the accuracy on randomly permuted labels, how well the probe fits noise at this n and d
  (in the spirit of Hewitt & Liang 2019's control tasks). With n not much larger than d, it exceeds chance.

High decodability does not show that the model *uses* the direction; interventions (patching, ablation) test that.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def _numpy(X) -> np.ndarray:
    if isinstance(X, torch.Tensor):
        X = X.detach().to("cpu", torch.float64).numpy()
    return np.asarray(X, dtype=np.float64)


def majority_baseline(y) -> float:
    """Share of the most frequent label: the accuracy of always guessing it."""
    _, counts = np.unique(np.asarray(y), return_counts=True)
    return float(counts.max() / counts.sum())


def probe_accuracy(X, y, folds: int = 5, C: float = 1.0, seed: int = 0) -> float:
    """Cross-validated accuracy of a linear probe (standardise, then logistic regression with inverse L2 strength C).

    X (n, d) activations (numpy or torch), y (n,) discrete labels. Folds are stratified and shuffled with `seed`;
    their number is capped by the rarest class. A single-class y returns 1.0 (nothing to decode).
    """
    X, y = _numpy(X), np.asarray(y)
    if X.ndim != 2 or len(X) != len(y):
        raise ValueError(f"need X (n, d) and y (n,), got {X.shape} and {y.shape}")
    _, counts = np.unique(y, return_counts=True)
    if len(counts) < 2:
        return 1.0
    k = min(folds, int(counts.min()))
    if k < 2:
        raise ValueError(f"every class needs at least 2 examples for cross-validation, got counts {counts.tolist()}")
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    return float(cross_val_score(probe, X, y, cv=cv, scoring="accuracy").mean())


def probe_layers(acts: Sequence, targets: Mapping[str, Sequence], folds: int = 5, C: float = 1.0, seed: int = 0,
                 control: bool = False) -> pd.DataFrame:
    """Probe every layer for every target.

    acts: one (n, d_l) matrix per layer, rows the same n inputs; targets: name -> (n,) labels.
    Returns a DataFrame with one row per (layer, target): accuracy, chance (majority rate) and, with
    ``control=True``, control (accuracy on labels permuted by a generator seeded with `seed`).
    """
    rng = np.random.default_rng(seed)
    rows = []
    for name, y in targets.items():
        y = np.asarray(y)
        shuffled = rng.permutation(y) if control else None
        for layer, X in enumerate(acts):
            row = {"layer": layer, "target": name, "accuracy": probe_accuracy(X, y, folds, C, seed),
                   "chance": majority_baseline(y)}
            if control:
                row["control"] = probe_accuracy(X, shuffled, folds, C, seed)
            rows.append(row)
    return pd.DataFrame(rows)
