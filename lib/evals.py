"""Held-out evaluation: one eval-mode context and one batched loop for every no-grad pass over a dataset.

    with eval_mode(model):
        logits = batched(lambda b: model(**b).logits[:, -1], enc, batch_size=256)

`eval_mode` switches the model to eval, turns gradients off and restores the model's own mode on exit (also on an
exception), so no caller hand-writes `was_training = model.training ... model.train(was_training)`.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Mapping

import torch


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module):
    """Eval mode and no gradients inside; the model's previous train/eval mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _rows(data) -> int:
    if isinstance(data, Mapping):
        return len(next(iter(data.values())))
    return len(data)


def _slice(data, i: int, j: int):
    if isinstance(data, Mapping):
        return {k: v[i:j] for k, v in data.items()}
    return data[i:j]


def batched(fn: Callable, data, batch_size: int = 256, cat: bool = True):
    """`fn` over consecutive batches of `data` (a tensor, or a dict of tensors sliced together along dim 0), without
    gradients; the outputs concatenated along dim 0 (`cat=False`: the list of outputs). Call inside `eval_mode`."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    outs = []
    with torch.no_grad():
        for i in range(0, _rows(data), batch_size):
            outs.append(fn(_slice(data, i, i + batch_size)))
    if not cat:
        return outs
    if not outs:
        return torch.empty(0)
    if isinstance(outs[0], torch.Tensor):
        return torch.cat(outs)
    if isinstance(outs[0], (list, tuple)):  # several outputs per batch: concatenate each
        return type(outs[0])(torch.cat(parts) for parts in zip(*outs))
    return outs
