"""lib.evals: eval mode restored, no gradients, batches reassembled exactly."""
import pytest
import torch

from lib import evals


def test_eval_mode_restores_training_and_disables_grad():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Dropout(0.5)).train()
    with evals.eval_mode(model):
        assert not model.training and not torch.is_grad_enabled()
    assert model.training and torch.is_grad_enabled()
    with pytest.raises(RuntimeError):
        with evals.eval_mode(model):
            raise RuntimeError("boom")
    assert model.training  # restored after an exception too
    model.eval()
    with evals.eval_mode(model):
        pass
    assert not model.training


def test_batched_equals_one_pass():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 2)
    x = torch.randn(37, 4)
    with evals.eval_mode(lin):
        whole = lin(x)
        for bs in (1, 5, 37, 100):
            assert torch.allclose(evals.batched(lin, x, bs), whole)
        both = evals.batched(lambda b: (lin(b["x"]), b["y"] * 2), {"x": x, "y": torch.arange(37)}, 8)
    assert torch.allclose(both[0], whole) and torch.equal(both[1], torch.arange(37) * 2)
    assert not evals.batched(lin, x, 8).requires_grad
    with pytest.raises(ValueError):
        evals.batched(lin, x, 0)
