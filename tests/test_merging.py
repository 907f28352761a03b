import math

import pytest
import torch
from torch import nn

from lib.merging import lerp, lerp_state_dicts, slerp, slerp_state_dicts


@pytest.fixture
def pair():
    g = torch.Generator().manual_seed(0)
    return torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)


def test_endpoints_exact(pair):
    v0, v1 = pair
    a, b = slerp(0.0, v0, v1), slerp(1.0, v0, v1)
    assert torch.equal(a, v0) and torch.equal(b, v1)
    assert a.data_ptr() != v0.data_ptr() and b.data_ptr() != v1.data_ptr()  # clones, not aliases


def test_parallel_falls_back_to_lerp():
    v0 = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    for t in (0.25, 0.5, 0.9):
        torch.testing.assert_close(slerp(t, v0, 2 * v0), (1 + t) * v0)
        torch.testing.assert_close(slerp(t, v0, -v0), (1 - 2 * t) * v0)  # anti-parallel too


def test_orthogonal_unit_vectors_half_way():
    e1, e2 = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    mid = slerp(0.5, e1, e2)
    torch.testing.assert_close(mid, torch.tensor([1.0, 1.0], dtype=torch.float64) / math.sqrt(2))
    assert lerp(0.5, e1, e2).norm().item() == pytest.approx(1 / math.sqrt(2))  # what SLERP avoids


def test_unit_norm_kept_along_path():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(64, generator=g, dtype=torch.float64)
    b = torch.randn(64, generator=g, dtype=torch.float64)
    a, b = a / a.norm(), b / b.norm()
    angle = math.acos((a @ b).item())
    for t in torch.linspace(0, 1, 11).tolist():
        v = slerp(t, a, b)
        assert v.norm().item() == pytest.approx(1.0, abs=1e-12)
        assert math.acos(min(1.0, (v @ a).item())) == pytest.approx(t * angle, abs=1e-6)  # constant speed


def test_known_2d_value():
    # cos = 0 -> theta = pi/2; t = 1/3: weights sin(pi/3) and sin(pi/6) on the UNnormalised tensors
    got = slerp(1 / 3, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0]))
    torch.testing.assert_close(got, torch.tensor([math.sqrt(3) / 2, 1.0]))


def test_dtype_preserved():
    g = torch.Generator().manual_seed(2)
    a, b = torch.randn(10, generator=g), torch.randn(10, generator=g)
    got = slerp(0.3, a.half(), b.bfloat16())
    assert got.dtype == torch.float16
    torch.testing.assert_close(got.float(), slerp(0.3, a, b.bfloat16().float()), atol=2e-3, rtol=2e-3)
    assert slerp(1.0, a.half(), b.double()).dtype == torch.float16


def test_errors(pair):
    v0, v1 = pair
    with pytest.raises(ValueError):
        slerp(0.5, v0, v1[:4])
    for t in (-0.1, 1.1):
        with pytest.raises(ValueError):
            slerp(t, v0, v1)


def test_state_dicts_on_linear_pair():
    torch.manual_seed(0)
    m0, m1 = nn.Linear(4, 3), nn.Linear(4, 3)
    sd0, sd1 = m0.state_dict(), m1.state_dict()
    sd0["steps"], sd1["steps"] = torch.tensor(7), torch.tensor(7)
    merged = slerp_state_dicts(sd0, sd1, t=0.58)
    assert set(merged) == set(sd0)
    for k in ("weight", "bias"):
        torch.testing.assert_close(merged[k], slerp(0.58, sd0[k], sd1[k]))
        assert not torch.allclose(merged[k], lerp(0.58, sd0[k], sd1[k]))  # genuinely spherical
    assert torch.equal(merged["steps"], sd0["steps"])
    assert all(torch.equal(slerp_state_dicts(sd0, sd1, 0.0)[k], sd0[k]) for k in sd0)
    m = nn.Linear(4, 3)
    m.load_state_dict({k: v for k, v in merged.items() if k != "steps"})
    lerped = lerp_state_dicts(sd0, sd1, 0.25)
    torch.testing.assert_close(lerped["weight"], 0.75 * sd0["weight"] + 0.25 * sd1["weight"])


def test_state_dict_mismatches_raise():
    sd0 = {"a": torch.ones(2), "b": torch.ones(2)}
    with pytest.raises(ValueError, match="'b'"):
        slerp_state_dicts(sd0, {"a": torch.ones(2)}, 0.5)
    with pytest.raises(ValueError, match="^a: shape"):
        slerp_state_dicts(sd0, {"a": torch.ones(3), "b": torch.ones(2)}, 0.5)
    with pytest.raises(ValueError, match="'n'"):
        slerp_state_dicts({"n": torch.tensor([1, 2])}, {"n": torch.tensor([1, 3])}, 0.5)
