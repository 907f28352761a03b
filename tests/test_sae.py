import numpy as np
import pytest
import torch

from lib.sae import (
    FeatureFlow,
    SAEConfig,
    SparseAutoencoder,
    feature_correlations,
    feature_flow,
    geometric_median,
    loss_recovered,
    max_correlation,
    resample_dead_,
    sae_loss,
    sae_metrics,
    train_sae,
)


def _synthetic(n=4096, d=16, k=8, p=0.15, seed=0):
    """Sparse non-negative mixtures of k orthonormal directions in R^d, plus an offset."""
    g = torch.Generator().manual_seed(seed)
    D = torch.linalg.qr(torch.randn(d, d, generator=g))[0][:k]
    on = torch.rand(n, k, generator=g) < p
    coef = on * (0.5 + torch.rand(n, k, generator=g))
    return coef @ D + 0.3, D


def _cfg(**kw):
    base = dict(d_in=16, d_sae=32, l1_coefficient=0.2, lr=3e-3, batch_size=256, n_steps=600, dead_window=100)
    return SAEConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def trained():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        X, D = _synthetic()
        sae, hist = train_sae(X, _cfg(), progress=False)
    finally:
        torch.set_num_threads(before)
    return X, D, sae, hist


def test_config_validation():
    assert SAEConfig(d_in=8, expansion_factor=4).d_sae == 32
    for bad, field in [
        (dict(d_in=8), "d_sae"),
        (dict(d_in=0, d_sae=4), "d_in"),
        (dict(d_in=8, d_sae=16, expansion_factor=4), "d_sae"),
        (dict(d_in=8, d_sae=16, lr=0), "lr"),
        (dict(d_in=8, d_sae=16, batch_size=-1), "batch_size"),
        (dict(d_in=8, d_sae=16, dead_window=0), "dead_window"),
        (dict(d_in=8, d_sae=16, betas=(0.9, 1.0)), "betas"),
        (dict(d_in=8, d_sae=16, l1_coefficient=-1), "l1_coefficient"),
    ]:
        with pytest.raises(ValueError, match=field):
            SAEConfig(**bad)


def test_shapes_and_init():
    sae = SparseAutoencoder(6, 20, generator=torch.Generator().manual_seed(0))
    assert sae.W_enc.shape == (6, 20) and sae.W_dec.shape == (20, 6)
    assert sae.b_enc.shape == (20,) and sae.b_dec.shape == (6,)
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(20))
    torch.testing.assert_close(sae.W_dec, (sae.W_enc / sae.W_enc.norm(dim=0)).T)  # tied direction
    x = torch.randn(5, 6)
    x_hat, f = sae(x)
    assert x_hat.shape == (5, 6) and f.shape == (5, 20) and (f >= 0).all()
    torch.testing.assert_close(x_hat, f @ sae.W_dec + sae.b_dec)


def test_decoder_gradient_projection():
    sae = SparseAutoencoder(5, 8, generator=torch.Generator().manual_seed(0))
    x = torch.randn(16, 5)
    sae_loss(x, *sae(x), 0.1)[0].backward()
    g = sae.W_dec.grad.clone()
    sae.remove_parallel_grad_()
    along = (sae.W_dec.grad * sae.W_dec).sum(dim=1)
    torch.testing.assert_close(along, torch.zeros(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(g - sae.W_dec.grad, (g * sae.W_dec).sum(1, keepdim=True) * sae.W_dec)
    assert along.abs().max() < (g * sae.W_dec).sum(dim=1).abs().max()


def test_loss_known_values():
    x = torch.tensor([[1.0, 0.0], [3.0, 0.0]])  # spread around the batch mean: SST = 2
    f = torch.tensor([[1.0, 2.0], [0.0, 3.0]])  # mean L1 = 3
    loss, mse, l1 = sae_loss(x, x.mean(0).expand_as(x), f, l1_coefficient=0.5)
    assert mse.item() == pytest.approx(1.0)  # predicting the mean explains nothing
    assert l1.item() == pytest.approx(3.0)
    assert loss.item() == pytest.approx(2.5)
    assert sae_loss(x, x, f, 0.0)[0].item() == 0.0


def test_trains_on_sparse_synthetic_data(trained):
    X, D, sae, hist = trained
    m = sae_metrics(sae, X)
    assert m["fve"] > 0.9
    assert m["l0"] < 6  # sparse codes: far fewer than the 32 features
    assert hist["mse"][-1] < 0.5 * hist["mse"][0]
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(32), atol=1e-5, rtol=0)
    best_cos = (D @ sae.W_dec.detach().T).max(dim=1).values  # each true direction has a feature
    assert best_cos.min() > 0.8
    assert set(hist) >= {"loss", "mse", "l1", "l0", "n_dead", "n_resampled"}
    assert all(len(v) == 600 for v in hist.values())


def test_same_seed_same_model(trained):
    X, _, sae, hist = trained
    sae2, hist2 = train_sae(X, _cfg(), progress=False)
    for k, v in sae.state_dict().items():
        assert torch.equal(v, sae2.state_dict()[k]), k
    assert hist == hist2
    sae3, _ = train_sae(X, _cfg(seed=1, n_steps=5), progress=False)
    assert not torch.equal(sae3.W_enc, sae.W_enc)


def test_b_dec_starts_at_geometric_median():
    X, _ = _synthetic(n=512)
    sae, _ = train_sae(X, _cfg(n_steps=1, lr=1e-12, median_sample=512), progress=False)
    torch.testing.assert_close(sae.b_dec.detach(), geometric_median(X), atol=1e-5, rtol=0)


def test_geometric_median():
    centre = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    offsets = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    pts = torch.cat([centre + offsets, centre - offsets])  # point-symmetric around the centre
    torch.testing.assert_close(geometric_median(pts), centre)
    cloud = torch.cat([centre + 0.1 * offsets, centre - 0.1 * offsets, torch.full((1, 3), 1e3, dtype=torch.float64)])
    gm = geometric_median(cloud)
    assert (gm - centre).norm() < 0.1  # one far outlier barely moves the median ...
    assert (cloud.mean(0) - centre).norm() > 10  # ... while it drags the mean far away
    assert geometric_median(pts.float()).dtype == torch.float32


def test_resample_dead_features():
    torch.manual_seed(0)
    sae = SparseAutoencoder(4, 6, generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
    x = torch.randn(32, 4)
    sae_loss(x, *sae(x), 0.1)[0].backward()
    opt.step()
    before = {k: v.clone() for k, v in sae.state_dict().items()}
    dead = torch.tensor([False, True, False, False, True, False])
    assert resample_dead_(sae, opt, dead, x, torch.Generator().manual_seed(0)) == 2
    alive = ~dead
    assert torch.equal(sae.W_dec[alive], before["W_dec"][alive])  # alive features untouched
    assert torch.equal(sae.W_enc[:, alive], before["W_enc"][:, alive])
    rows = sae.W_dec[dead].detach()
    torch.testing.assert_close(rows.norm(dim=1), torch.ones(2))
    dirs = (x - sae.b_dec.detach()) / (x - sae.b_dec.detach()).norm(dim=1, keepdim=True)
    assert ((rows @ dirs.T).max(dim=1).values > 1 - 1e-5).all()  # each new row is an input direction
    enc = sae.W_enc[:, dead].detach().T
    target = 0.2 * before["W_enc"][:, alive].norm(dim=0).mean()
    torch.testing.assert_close(enc.norm(dim=1), target.expand(2))
    torch.testing.assert_close(enc / enc.norm(dim=1, keepdim=True), rows)
    assert (sae.b_enc[dead] == 0).all()
    for p in (sae.W_dec, sae.b_enc):
        assert (opt.state[p]["exp_avg"][dead] == 0).all() and (opt.state[p]["exp_avg"][alive] != 0).any()
    assert (opt.state[sae.W_enc]["exp_avg_sq"][:, dead] == 0).all()


def test_resampling_switch():
    X, _ = _synthetic(n=1024)
    cfg = dict(d_sae=64, l1_coefficient=2.0, n_steps=120, dead_window=20)  # strong L1 kills features
    _, on = train_sae(X, _cfg(**cfg), progress=False)
    _, off = train_sae(X, _cfg(**{**cfg, "dead_window": None}), progress=False)
    assert sum(on["n_resampled"]) > 0
    assert sum(off["n_resampled"]) == 0 and sum(off["n_dead"]) == 0
    _, late = train_sae(X, _cfg(**{**cfg, "resample_until": 0.0}), progress=False)
    assert sum(late["n_resampled"]) == 0 and sum(late["n_dead"]) > 0


def test_sae_metrics_known_case():
    sae = SparseAutoencoder(3, 4)
    with torch.no_grad():  # make the SAE the identity on the positive orthant, one feature unused
        sae.W_enc.zero_()
        sae.W_dec.zero_()
        sae.W_enc[:, :3] = torch.eye(3)
        sae.W_dec[:3] = torch.eye(3)
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    X = torch.rand(50, 3)
    m = sae_metrics(sae, X, batch_size=7)
    assert m["fve"] == pytest.approx(1.0, abs=1e-6)
    assert m["n_dead"] == 1 and m["dead_share"] == 0.25
    assert m["l0"] == pytest.approx((X > 0).sum().item() / 50)
    with torch.no_grad():
        sae.W_dec.zero_()
        sae.b_dec.copy_(X.mean(0))  # predicting the mean: FVE 0
    assert sae_metrics(sae, X)["fve"] == pytest.approx(0.0, abs=1e-6)


def test_loss_recovered():
    assert loss_recovered(2.0, 2.0, 6.0) == 1.0
    assert loss_recovered(2.0, 6.0, 6.0) == 0.0
    assert loss_recovered(2.0, 3.0, 6.0) == pytest.approx(0.75)
    with pytest.raises(ValueError):
        loss_recovered(2.0, 3.0, 2.0)


@pytest.mark.parametrize("chunk", [7, 64, 100, 4096])
def test_feature_correlations_match_numpy(chunk):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(100, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, -2, 100, 0]
    B = np.c_[A[:, :2] @ rng.normal(size=(2, 3)), rng.normal(size=(100, 4))]
    ref = np.corrcoef(A.T, B.T)[:5, 5:]
    got = feature_correlations(torch.tensor(A, dtype=torch.float32), B.astype(np.float32), chunk_size=chunk)
    assert got.dtype == torch.float32 and got.shape == (5, 7)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-5)


def test_constant_features_correlate_zero():
    rng = np.random.default_rng(1)
    A = rng.normal(size=(64, 4)).astype(np.float32)
    A[:, 1] = 0.0  # a dead feature
    A[:, 3] = 2.5  # a constant one
    C = feature_correlations(A, A, chunk_size=10)
    assert torch.isfinite(C).all()
    assert (C[[1, 3]] == 0).all() and (C[:, [1, 3]] == 0).all()
    torch.testing.assert_close(C.diagonal()[[0, 2]], torch.ones(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(C, C.T)


def test_feature_correlations_errors():
    with pytest.raises(ValueError):
        feature_correlations(np.ones((5, 2)), np.ones((6, 2)))


def _hand_corr():
    # rows: features of a; columns: features of b
    return torch.tensor(
        [
            [0.95, 0.10, 0.00, 0.20],  # persists (-> b0)
            [0.20, 0.79, 0.80, 0.00],  # persists (-> b2; 0.79 misses)
            [0.10, 0.30, 0.10, 0.50],  # disappears
        ]
    )


def test_feature_flow_hand_made():
    flow = feature_flow(_hand_corr(), threshold=0.8)
    assert isinstance(flow, FeatureFlow)
    assert flow.persisting.tolist() == [0, 1]
    assert flow.disappearing.tolist() == [2]
    assert flow.emerging.tolist() == [1, 3]
    assert flow.matched.tolist() == [0, 2]
    assert (flow.n_rows, flow.n_cols) == (3, 4)
    assert flow.persisting_share == pytest.approx(2 / 3)
    assert flow.disappearing_share == pytest.approx(1 / 3)
    assert flow.emerging_share == pytest.approx(0.5)


def test_feature_flow_threshold_and_alive_masks():
    corr = _hand_corr()
    loose = feature_flow(corr, threshold=0.5, block=2)  # block smaller than the rows
    assert loose.persisting.tolist() == [0, 1, 2] and loose.emerging.tolist() == []
    strict = feature_flow(corr, threshold=0.96)
    assert strict.persisting.tolist() == [] and strict.emerging_share == 1.0
    masked = feature_flow(corr, threshold=0.8, alive_a=[True, True, False], alive_b=[True, True, False, True])
    # b2 is dead, so a1 loses its only match; dead a2 is counted nowhere
    assert masked.persisting.tolist() == [0] and masked.disappearing.tolist() == [1]
    assert masked.emerging.tolist() == [1, 3] and (masked.n_rows, masked.n_cols) == (2, 3)
    assert masked.persisting_share == 0.5 and masked.emerging_share == pytest.approx(2 / 3)


def test_max_correlation():
    values, idx = max_correlation(_hand_corr(), dim=1)
    torch.testing.assert_close(values, torch.tensor([0.95, 0.80, 0.50]))
    assert idx.tolist() == [0, 2, 3]
    values, idx = max_correlation(_hand_corr().numpy(), dim=0)
    assert idx.tolist() == [0, 1, 1, 2]
