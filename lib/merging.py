"""Model merging by spherical linear interpolation (SLERP), following mergekit's `slerp` method.

SLERP (Shoemake 1985, "Animating rotation with quaternion curves") moves along the great circle
between two directions instead of the straight chord. mergekit applies it to each parameter tensor
as one flattened vector. With the cosine between the *normalised* tensors

    d = < v0/|v0|, v1/|v1| >,   theta = arccos(d),

the merge at t in [0, 1] is

    slerp(t; v0, v1) = sin((1-t) theta)/sin(theta) * v0 + sin(t theta)/sin(theta) * v1,

applied to the ORIGINAL, unnormalised tensors (so norms interpolate roughly, directions rotate).
When the tensors are nearly (anti)parallel, |d| > dot_threshold, sin(theta) ~ 0 makes the weights
ill-conditioned and mergekit falls back to plain linear interpolation (1-t) v0 + t v1.

For unit vectors SLERP stays on the unit sphere; plain averaging (LERP) of two dissimilar weight
tensors shrinks their norm, which is the usual argument for SLERP merges.

Semantics: in a mergekit config `base_model` is v0, so t = 0 returns the base model and t = 1 the
other one. The study merges `slerp_state_dicts(lua, stories, t=0.58)`, i.e. 58% of the way from the
Lua model towards the stories model. mergekit can also vary t per layer/module; here t is one scalar
per call and callers loop over tensors with their own t if they need a schedule.
"""
from collections.abc import Callable, Mapping

import torch

Tensor = torch.Tensor


def _check_t(t: float) -> float:
    t = float(t)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must lie in [0, 1], got {t}")
    return t


def _work_dtype(v0: Tensor, v1: Tensor) -> torch.dtype:
    # Half-precision weights are merged in float32; float64 stays float64.
    return torch.float64 if torch.float64 in (v0.dtype, v1.dtype) else torch.float32


def lerp(t: float, v0: Tensor, v1: Tensor) -> Tensor:
    """(1-t) v0 + t v1 for same-shape tensors, returned in v0's dtype; t=0/1 return exact clones."""
    t = _check_t(t)
    if v0.shape != v1.shape:
        raise ValueError(f"shape mismatch: {tuple(v0.shape)} vs {tuple(v1.shape)}")
    if t == 0.0:
        return v0.clone()
    if t == 1.0:
        return v1.to(v0.dtype, copy=True)
    w = _work_dtype(v0, v1)
    return ((1 - t) * v0.to(w) + t * v1.to(w)).to(v0.dtype)


def slerp(t: float, v0: Tensor, v1: Tensor, dot_threshold: float = 0.9995, eps: float = 1e-8) -> Tensor:
    """Spherical interpolation of two same-shape tensors, treated as single flattened vectors.

    t: scalar in [0, 1]; v0, v1: tensors of one shape. Returns a tensor of that shape in v0's dtype.
    t=0 returns a clone of v0 and t=1 a clone of v1 (cast to v0's dtype). Tensors whose norm is
    below eps are not normalised (as in mergekit), so a zero tensor counts as orthogonal to anything.
    """
    t = _check_t(t)
    if v0.shape != v1.shape:
        raise ValueError(f"shape mismatch: {tuple(v0.shape)} vs {tuple(v1.shape)}")
    if t in (0.0, 1.0):
        return lerp(t, v0, v1)
    w = _work_dtype(v0, v1)
    a, b = v0.detach().to(w), v1.detach().to(w)
    na, nb = torch.linalg.vector_norm(a), torch.linalg.vector_norm(b)
    ua = a / na if na > eps else a
    ub = b / nb if nb > eps else b
    d = torch.sum(ua * ub).clamp(-1.0, 1.0).item()
    if abs(d) > dot_threshold:
        return lerp(t, v0, v1)
    theta = torch.arccos(torch.tensor(d, dtype=torch.float64))
    sin_theta = torch.sin(theta)
    s0 = (torch.sin((1 - t) * theta) / sin_theta).item()
    s1 = (torch.sin(t * theta) / sin_theta).item()
    return (s0 * a + s1 * b).to(v0.dtype)


def _merge_state_dicts(
    sd0: Mapping[str, Tensor], sd1: Mapping[str, Tensor], fn: Callable[[Tensor, Tensor], Tensor]
) -> dict[str, Tensor]:
    missing0, missing1 = sorted(set(sd1) - set(sd0)), sorted(set(sd0) - set(sd1))
    if missing0 or missing1:
        raise ValueError(f"state dicts differ: missing from sd0 {missing0}, missing from sd1 {missing1}")
    out = {}
    for name, v0 in sd0.items():
        v1 = sd1[name]
        if not torch.is_floating_point(v0):
            # Integer buffers (position ids, counters) cannot be interpolated; they must agree.
            if v0.shape != v1.shape or not torch.equal(v0, v1.to(v0.dtype)):
                raise ValueError(f"non-floating tensor {name!r} differs between the state dicts")
            out[name] = v0.clone()
            continue
        try:
            out[name] = fn(v0, v1)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from err
    return out


def slerp_state_dicts(
    sd0: Mapping[str, Tensor], sd1: Mapping[str, Tensor], t: float, dot_threshold: float = 0.9995
) -> dict[str, Tensor]:
    """Per-tensor SLERP of two state dicts with identical keys and shapes -> new state dict.

    sd0 plays mergekit's `base_model` (t=0 returns it). Non-floating tensors are copied from sd0
    when equal in both and raise ValueError otherwise; key or shape mismatches raise ValueError.
    """
    t = _check_t(t)
    return _merge_state_dicts(sd0, sd1, lambda a, b: slerp(t, a, b, dot_threshold=dot_threshold))


def lerp_state_dicts(sd0: Mapping[str, Tensor], sd1: Mapping[str, Tensor], t: float) -> dict[str, Tensor]:
    """Per-tensor linear interpolation (1-t) sd0 + t sd1, the baseline SLERP is compared with."""
    t = _check_t(t)
    return _merge_state_dicts(sd0, sd1, lambda a, b: lerp(t, a, b))
