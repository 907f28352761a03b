"""Sparse autoencoders (SAEs) on model activations, and matching their features across models.

An SAE (Bricken et al. 2023, "Towards Monosemanticity"; Cunningham et al. 2023) rewrites an
activation x in R^d_in as a sparse, non-negative code f in R^d_sae over an overcomplete dictionary:

    f     = ReLU(W_enc^T (x - b_dec) + b_enc)      W_enc (d_in, d_sae), b_enc (d_sae,)
    x_hat = W_dec^T f + b_dec                      W_dec (d_sae, d_in), b_dec (d_in,)

(with row-vector batches: f = ReLU((x - b_dec) @ W_enc + b_enc), x_hat = f @ W_dec + b_dec).
Each decoder row is a unit-norm feature direction, so the size of f_i alone carries the magnitude
and the L1 penalty cannot be dodged by shrinking f and growing W_dec. The loss per batch is

    L = sum_b ||x_b - x_hat_b||^2 / sum_b ||x_b - mean(x)||^2  +  l1_coefficient * mean_b ||f_b||_1,

a normalised MSE (the share of batch variance left unexplained, 1 - FVE) plus the L1 sparsity
penalty; Horn & Elliott 2024 train with this form, following SAELens. Note the L1 term is in the
units of the activations, so l1_coefficient must be tuned per model and layer.

A TopK SAE (Makhzani & Frey 2013; Gao et al. 2024, "Scaling and evaluating sparse autoencoders"), kind="topk",
keeps only the k largest pre-activations of each token and needs no L1 penalty:

    f = ReLU(TopK_k((x - b_dec) @ W_enc + b_enc))      exactly k non-zero features a token (fewer only where
                                                      fewer than k pre-activations are positive)

Its sparsity is set, not tuned through a penalty in the activations' units, and it does not shrink the codes.
Its encoder starts as the decoder's transpose (tied initialisation), and dead features are revived by the
auxiliary AuxK loss instead of resampling: the aux_k largest pre-activations among the features that have not
fired for `dead_window` steps reconstruct the residual x - x_hat (normalised MSE against its own variance,
weighted by aux_coefficient), so dead features get a gradient towards what the live ones miss. Gao et al. find
that across seeds TopK SAEs with small dictionaries learn largely the same features.

Training details (Bricken et al. 2023): b_dec starts at the geometric median of the activations
(Weiszfeld's algorithm); the decoder-gradient component parallel to each unit row is removed
before the Adam step and rows are renormalised after it. Features that have not fired for
`dead_window` steps are resampled: their decoder row becomes the direction of an input drawn with
probability ~ (reconstruction error)^2, their encoder column the same direction at 0.2x the mean
alive encoder norm, encoder bias 0, and their Adam moments reset. This is the simpler, robust
stand-in for the "ghost grads" of later Anthropic updates.

To follow features through fine-tuning, `feature_correlations` gives the Pearson correlation of
every feature of SAE a with every feature of SAE b over the same tokens, and `feature_flow`
sorts features into persisting (a feature of a has a partner in b with corr >= threshold),
disappearing (it has none) and emerging (a feature of b no feature of a matches).
"""
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from lib.progress import Ticker

Tensor = torch.Tensor
KINDS = ("relu", "topk")


@dataclass
class SAEConfig:
    """Hyper-parameters of one SAE run. Give d_sae or expansion_factor (d_sae = d_in * factor)."""

    d_in: int
    d_sae: int | None = None
    expansion_factor: int | None = None
    l1_coefficient: float = 1e-3
    lr: float = 4e-4
    betas: tuple[float, float] = (0.9, 0.9999)
    batch_size: int = 4096
    n_steps: int = 10_000
    seed: int = 0
    dead_window: int | None = 1000  # steps without firing before a feature is resampled; None: never
    resample_until: float = 0.75  # no resampling in the last quarter: new features need time to train
    median_sample: int = 4096  # activations used for the geometric-median init of b_dec
    kind: str = "relu"  # "relu": L1-penalised ReLU codes; "topk": the k largest per token, no L1 (module doc)
    k: int | None = None  # kind="topk": active features a token
    aux_k: int | None = None  # kind="topk": dead features in the AuxK loss (None: 2k, capped at d_sae)
    aux_coefficient: float = 1 / 32  # kind="topk": weight of the AuxK loss (Gao et al. 2024); 0: none
    device: str = "cpu"

    def __post_init__(self):
        if self.d_sae is None and self.expansion_factor is None:
            raise ValueError("d_sae: give d_sae or expansion_factor")
        if self.expansion_factor is not None:
            if self.expansion_factor <= 0:
                raise ValueError(f"expansion_factor must be positive, got {self.expansion_factor}")
            implied = self.d_in * self.expansion_factor
            if self.d_sae is not None and self.d_sae != implied:
                raise ValueError(f"d_sae={self.d_sae} contradicts d_in * expansion_factor = {implied}")
            self.d_sae = implied
        checks = {
            "d_in": self.d_in > 0, "d_sae": self.d_sae > 0, "batch_size": self.batch_size > 0,
            "n_steps": self.n_steps > 0, "median_sample": self.median_sample > 0, "lr": self.lr > 0,
            "l1_coefficient": self.l1_coefficient >= 0, "resample_until": 0 <= self.resample_until <= 1,
            "dead_window": self.dead_window is None or self.dead_window > 0,
            "betas": len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "kind": self.kind in KINDS,
            "k": (self.k is None) if self.kind == "relu" else (self.k is not None and 1 <= self.k <= self.d_sae),
            "aux_k": self.aux_k is None or 1 <= self.aux_k <= self.d_sae, "aux_coefficient": self.aux_coefficient >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"invalid {name}: {getattr(self, name)!r}")
        self.betas = tuple(float(b) for b in self.betas)
        if self.kind == "topk" and self.aux_k is None:
            self.aux_k = min(2 * self.k, self.d_sae)


def geometric_median(X: Tensor, n_iter: int = 100, tol: float = 1e-7, eps: float = 1e-12) -> Tensor:
    """Point minimising the summed Euclidean distance to the rows of X (n, d) -> (d,), X's dtype.

    Weiszfeld's algorithm: m <- sum_i w_i x_i / sum_i w_i with w_i = 1 / max(||x_i - m||, eps),
    started at the mean and run until the step is below tol * (1 + ||m||). Unlike the mean, it
    barely moves when a few points are outliers.
    """
    Xd = torch.as_tensor(X).to(torch.float64)
    m = Xd.mean(dim=0)
    for _ in range(n_iter):
        w = 1.0 / torch.linalg.vector_norm(Xd - m, dim=1).clamp_min(eps)
        new = (w[:, None] * Xd).sum(dim=0) / w.sum()
        done = torch.linalg.vector_norm(new - m) <= tol * (1 + torch.linalg.vector_norm(m))
        m = new
        if done:
            break
    return m.to(torch.as_tensor(X).dtype)


class SparseAutoencoder(nn.Module):
    """ReLU SAE, or TopK SAE when k is given. Shapes: W_enc (d_in, d_sae), W_dec (d_sae, d_in), b_enc (d_sae,),
    b_dec (d_in,). A TopK SAE's encoder starts as the decoder's transpose (unit-norm columns)."""

    def __init__(self, d_in: int, d_sae: int, generator: torch.Generator | None = None, k: int | None = None):
        super().__init__()
        if k is not None and not 1 <= k <= d_sae:
            raise ValueError(f"k must be in [1, d_sae={d_sae}], got {k}")
        self.k = k
        W = torch.empty(d_sae, d_in)
        nn.init.kaiming_uniform_(W, nonlinearity="relu", generator=generator)  # fan_in = d_in
        unit = W / torch.linalg.vector_norm(W, dim=1, keepdim=True)
        self.W_enc = nn.Parameter((W if k is None else unit).T.contiguous())
        self.W_dec = nn.Parameter(unit)
        self.b_enc = nn.Parameter(torch.zeros(d_sae))
        self.b_dec = nn.Parameter(torch.zeros(d_in))

    @property
    def d_sae(self) -> int:
        return self.W_enc.shape[1]

    @property
    def kind(self) -> str:
        return "relu" if self.k is None else "topk"

    def pre_activations(self, x: Tensor) -> Tensor:
        """x (n, d_in) -> (x - b_dec) @ W_enc + b_enc (n, d_sae)."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def activate(self, pre: Tensor) -> Tensor:
        """Pre-activations (n, d_sae) -> codes f (n, d_sae): ReLU, or ReLU of the k largest per row (rest 0)."""
        if self.k is None:
            return F.relu(pre)
        return topk_relu(pre, self.k)

    def encode(self, x: Tensor) -> Tensor:
        """x (n, d_in) -> f (n, d_sae), non-negative; at most k non-zero per row for a TopK SAE."""
        return self.activate(self.pre_activations(x))

    def decode(self, f: Tensor) -> Tensor:
        """f (n, d_sae) -> x_hat (n, d_in)."""
        return f @ self.W_dec + self.b_dec

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (n, d_in) -> (x_hat (n, d_in), f (n, d_sae))."""
        f = self.encode(x)
        return self.decode(f), f

    @torch.no_grad()
    def normalise_decoder_(self) -> None:
        self.W_dec /= torch.linalg.vector_norm(self.W_dec, dim=1, keepdim=True).clamp_min(1e-12)

    @torch.no_grad()
    def remove_parallel_grad_(self) -> None:
        """Project each decoder-row gradient onto the tangent space of the unit sphere."""
        g = self.W_dec.grad
        if g is not None:
            g -= (g * self.W_dec).sum(dim=1, keepdim=True) * self.W_dec


def topk_relu(pre: Tensor, k: int) -> Tensor:
    """ReLU of the k largest entries of each row of pre (n, d), zeros elsewhere (n, d); ties go to lower indices."""
    vals, idx = pre.topk(k, dim=1, sorted=False)
    return torch.zeros_like(pre).scatter_(1, idx, F.relu(vals))


def auxk_loss(sae: SparseAutoencoder, x: Tensor, x_hat: Tensor, pre: Tensor, dead: Tensor, aux_k: int) -> Tensor:
    """Gao et al.'s AuxK loss: the aux_k largest pre-activations (n, d_sae) among the dead features (d_sae,) bool
    reconstruct the residual x - x_hat (n, d_in), detached; normalised MSE against the residual's own variance.
    0 when no feature is dead."""
    n_dead = int(dead.sum())
    if n_dead == 0:
        return pre.new_zeros(())
    masked = pre.masked_fill(~dead, float("-inf"))
    e_hat = topk_relu(masked, min(aux_k, n_dead)).nan_to_num(0.0) @ sae.W_dec
    e = (x - x_hat).detach()
    sst = ((e - e.mean(dim=0)) ** 2).sum().clamp_min(1e-12)
    return ((e_hat - e) ** 2).sum() / sst


def sae_loss(x: Tensor, x_hat: Tensor, f: Tensor, l1_coefficient: float) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, normalised MSE, mean L1) for a batch x, x_hat (n, d_in), f (n, d_sae); see module doc."""
    sse = ((x_hat - x) ** 2).sum()
    sst = ((x - x.mean(dim=0)) ** 2).sum().clamp_min(1e-12)  # a batch of one has no spread
    mse_norm = sse / sst
    l1 = f.abs().sum(dim=1).mean()
    return mse_norm + l1_coefficient * l1, mse_norm, l1


@torch.no_grad()
def resample_dead_(
    sae: SparseAutoencoder, opt: torch.optim.Adam, dead: Tensor, x: Tensor, generator: torch.Generator
) -> int:
    """Re-initialise the features flagged in dead (d_sae,) bool towards badly reconstructed x (n, d_in).

    Returns the number of features resampled. Their Adam moments are zeroed so stale momentum does
    not push the new directions straight back.
    """
    idx = torch.nonzero(dead).flatten()
    if idx.numel() == 0:
        return 0
    x_hat, _ = sae(x)
    weight = (((x - x_hat) ** 2).sum(dim=1) ** 2).double().cpu()
    if not torch.isfinite(weight).all() or weight.sum() <= 0:
        weight = torch.ones_like(weight)
    pick = torch.multinomial(weight, idx.numel(), replacement=True, generator=generator).to(x.device)
    v = x[pick] - sae.b_dec
    v = v / torch.linalg.vector_norm(v, dim=1, keepdim=True).clamp_min(1e-12)
    alive = ~dead
    enc_norm = torch.linalg.vector_norm(sae.W_enc[:, alive], dim=0).mean() if alive.any() else 1.0
    sae.W_dec[idx] = v
    sae.W_enc[:, idx] = v.T * (0.2 * enc_norm)
    sae.b_enc[idx] = 0.0
    for p, where in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,))):
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in opt.state.get(p, {}):
                opt.state[p][moment][where] = 0.0
    return int(idx.numel())


def train_sae(acts: Tensor, cfg: SAEConfig, progress: bool = True) -> tuple[SparseAutoencoder, dict]:
    """Train an SAE with minibatch Adam over shuffled activations acts (n, d_in).

    Deterministic on CPU for a given cfg.seed. Returns (sae on cfg.device, history) where history
    holds per-step lists: loss, mse (normalised), l1, l0 (mean active features per token), n_dead
    (features silent for >= dead_window steps before resampling), n_resampled and aux (the AuxK
    loss; 0 for kind="relu", which resamples dead features instead).
    """
    acts = torch.as_tensor(acts)
    if acts.ndim != 2 or acts.shape[1] != cfg.d_in:
        raise ValueError(f"acts must have shape (n, {cfg.d_in}), got {tuple(acts.shape)}")
    n = acts.shape[0]
    device = torch.device(cfg.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    topk = cfg.kind == "topk"
    sae = SparseAutoencoder(cfg.d_in, cfg.d_sae, generator=gen, k=cfg.k if topk else None)
    sample = acts[torch.randperm(n, generator=gen)[: cfg.median_sample]]
    with torch.no_grad():
        sae.b_dec.copy_(geometric_median(sample.float()).float())
    sae.to(device)
    opt = torch.optim.Adam(sae.parameters(), lr=cfg.lr, betas=cfg.betas)

    bs = min(cfg.batch_size, n)
    perm, pos = torch.randperm(n, generator=gen), 0
    since_fired = torch.zeros(cfg.d_sae, dtype=torch.long, device=device)
    history = {k: [] for k in ("loss", "mse", "l1", "l0", "n_dead", "n_resampled", "aux")}
    bar = tqdm(range(cfg.n_steps), disable=not progress, desc="SAE")
    tick = Ticker(f"training SAE d_sae={cfg.d_sae}", cfg.n_steps)
    for step in bar:
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=gen), 0
        x = acts[perm[pos : pos + bs]].to(device, torch.float32)
        pos += bs

        pre = sae.pre_activations(x)
        f = sae.activate(pre)
        x_hat = sae.decode(f)
        loss, mse, l1 = sae_loss(x, x_hat, f, 0.0 if topk else cfg.l1_coefficient)
        aux = loss.new_zeros(())
        if topk and cfg.aux_coefficient > 0 and cfg.dead_window is not None:
            aux = auxk_loss(sae, x, x_hat, pre, since_fired >= cfg.dead_window, cfg.aux_k)
            loss = loss + cfg.aux_coefficient * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        sae.remove_parallel_grad_()
        opt.step()
        sae.normalise_decoder_()

        with torch.no_grad():
            active = f > 0
            since_fired += 1
            since_fired[active.any(dim=0)] = 0
            n_dead, n_res = 0, 0
            if cfg.dead_window is not None:
                dead = since_fired >= cfg.dead_window
                n_dead = int(dead.sum())
                if n_dead and not topk and step < cfg.resample_until * cfg.n_steps:
                    pool = acts[torch.randint(n, (4 * bs,), generator=gen)].to(device, torch.float32)
                    n_res = resample_dead_(sae, opt, dead, pool, gen)
                    since_fired[dead] = 0
        for k, v in (("loss", loss), ("mse", mse), ("l1", l1), ("l0", active.sum(1).float().mean()), ("aux", aux)):
            history[k].append(v.item())
        history["n_dead"].append(n_dead)
        history["n_resampled"].append(n_res)
        if progress and step % 50 == 0:
            bar.set_postfix(mse=f"{history['mse'][-1]:.3f}", l0=f"{history['l0'][-1]:.1f}")
        tick.update()
    tick.close()
    return sae, history


def _column_moments(X: Tensor, chunk: int, device) -> tuple[Tensor, Tensor, Tensor]:
    """Column mean, sum of squared deviations and max |x| of X (n, d), float64, chunked over rows.

    Chunks are merged with Chan et al.'s pairwise update, so no float64 copy of X is ever whole.
    """
    d = X.shape[1]
    mean = torch.zeros(d, dtype=torch.float64, device=device)
    m2, maxabs = torch.zeros_like(mean), torch.zeros_like(mean)
    seen = 0
    for s in range(0, X.shape[0], chunk):
        c = X[s : s + chunk].to(device, torch.float64)
        nb, mb = c.shape[0], c.mean(dim=0)
        total = seen + nb
        delta = mb - mean
        m2 += ((c - mb) ** 2).sum(dim=0) + delta**2 * (seen * nb / total)
        mean += delta * (nb / total)
        maxabs = torch.maximum(maxabs, c.abs().amax(dim=0))
        seen = total
    return mean, m2, maxabs


def _standardiser(X: Tensor, chunk: int, device) -> tuple[Tensor, Tensor]:
    """float32 (mean, 1/std) per column; 1/std = 0 for columns that never vary."""
    n = X.shape[0]
    stat_chunk = max(1, min(chunk, (1 << 24) // max(X.shape[1], 1)))  # <= 128 MiB of float64
    mean, m2, maxabs = _column_moments(X, stat_chunk, device)
    std = torch.sqrt(m2 / n)
    constant = std <= 1e-10 * maxabs  # also catches all-zero (never firing) features
    inv = torch.where(constant, torch.zeros_like(std), 1.0 / std.clamp_min(1e-300))
    return mean.float(), inv.float()


def feature_correlations(acts_a, acts_b, chunk_size: int = 4096, device=None) -> Tensor:
    """Pearson correlation (d_a, d_b), float32, of the columns of acts_a (n, d_a) and acts_b (n, d_b).

    Both hold activations on the same n tokens. Two passes over token chunks: column means and
    standard deviations in float64, then standardised float32 chunks accumulate Z_a^T Z_b. Peak
    memory beyond the inputs and the output is about chunk_size * (d_a + d_b) * 4 bytes. A column
    that never varies correlates 0 with everything (itself included), never NaN. device: where to
    compute and return the result (default: acts_a's device for a tensor, else CPU).
    """
    A, B = torch.as_tensor(acts_a), torch.as_tensor(acts_b)
    if A.ndim != 2 or B.ndim != 2 or A.shape[0] != B.shape[0]:
        raise ValueError(f"need (n, d_a) and (n, d_b) on the same tokens, got {tuple(A.shape)}, {tuple(B.shape)}")
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    device = torch.device(device) if device is not None else A.device
    n = A.shape[0]
    mean_a, inv_a = _standardiser(A, chunk_size, device)
    mean_b, inv_b = _standardiser(B, chunk_size, device)
    out = torch.zeros(A.shape[1], B.shape[1], dtype=torch.float32, device=device)
    for s in range(0, n, chunk_size):
        za = A[s : s + chunk_size].to(device, torch.float32, copy=True).sub_(mean_a).mul_(inv_a)
        zb = B[s : s + chunk_size].to(device, torch.float32, copy=True).sub_(mean_b).mul_(inv_b)
        out.addmm_(za.T, zb)
    return out.div_(max(n, 1)).clamp_(-1.0, 1.0)


@dataclass
class FeatureFlow:
    """Fate of features between SAE a (rows of corr) and SAE b (columns); indices are numpy int64."""

    persisting: np.ndarray  # rows with some column at corr >= threshold
    disappearing: np.ndarray  # rows without such a column
    emerging: np.ndarray  # columns without such a row
    matched: np.ndarray  # columns with such a row
    n_rows: int  # rows counted (alive features of a)
    n_cols: int  # columns counted (alive features of b)
    threshold: float
    persisting_share: float
    disappearing_share: float
    emerging_share: float


def _mask(alive, size: int, device) -> Tensor:
    if alive is None:
        return torch.ones(size, dtype=torch.bool, device=device)
    alive = torch.as_tensor(alive, dtype=torch.bool, device=device)
    if alive.shape != (size,):
        raise ValueError(f"alive mask must have shape ({size},), got {tuple(alive.shape)}")
    return alive


def feature_flow(corr, threshold: float = 0.8, alive_a=None, alive_b=None, block: int = 1024) -> FeatureFlow:
    """Persisting / disappearing / emerging features from a correlation matrix corr (n_a, n_b).

    alive_a (n_a,), alive_b (n_b,): optional boolean masks; dead features (e.g. never firing on the
    evaluation tokens) are left out of every set, cannot serve as matches and are not counted in
    the shares. NaN correlations never match. Works in row blocks so no second n_a x n_b matrix.
    """
    corr = torch.as_tensor(corr)
    if corr.ndim != 2:
        raise ValueError(f"corr must be 2-D, got shape {tuple(corr.shape)}")
    n_a, n_b = corr.shape
    alive_a, alive_b = _mask(alive_a, n_a, corr.device), _mask(alive_b, n_b, corr.device)
    row_hit = torch.zeros(n_a, dtype=torch.bool, device=corr.device)
    col_hit = torch.zeros(n_b, dtype=torch.bool, device=corr.device)
    for s in range(0, n_a, block):
        hit = (corr[s : s + block] >= threshold) & alive_a[s : s + block, None] & alive_b[None, :]
        row_hit[s : s + block] = hit.any(dim=1)
        col_hit |= hit.any(dim=0)

    def idx(mask: Tensor) -> np.ndarray:
        return torch.nonzero(mask).flatten().cpu().numpy().astype(np.int64)

    sets = idx(row_hit), idx(alive_a & ~row_hit), idx(alive_b & ~col_hit), idx(col_hit)
    rows, cols = int(alive_a.sum()), int(alive_b.sum())
    nan = float("nan")
    shares = [sets[0].size / rows if rows else nan, sets[1].size / rows if rows else nan,
              sets[2].size / cols if cols else nan]
    return FeatureFlow(*sets, rows, cols, float(threshold), *shares)


def max_correlation(corr, dim: int = 1) -> tuple[Tensor, Tensor]:
    """Best match per feature: dim=1 -> for each row (feature of a) the max over columns, and its
    column index; dim=0 -> for each column. Returns (values, indices) tensors."""
    return tuple(torch.as_tensor(corr).max(dim=dim))


@torch.no_grad()
def sae_metrics(sae: SparseAutoencoder, acts: Tensor, batch_size: int = 4096) -> dict:
    """Evaluation on acts (n, d_in): fve = 1 - SSE/SST (SST around the mean of acts), normalised_mse
    = SSE/SST, mse = SSE/n per token, l0 = mean active features per token, n_dead / dead_share =
    features that never fire on acts."""
    acts = torch.as_tensor(acts)
    device = sae.W_enc.device
    _, m2, _ = _column_moments(acts, batch_size, device)
    sse, l0 = 0.0, 0.0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool, device=device)
    for s in range(0, acts.shape[0], batch_size):
        x = acts[s : s + batch_size].to(device, torch.float32)
        x_hat, f = sae(x)
        sse += ((x_hat.double() - x.double()) ** 2).sum().item()
        active = f > 0
        l0 += active.sum().item()
        fired |= active.any(dim=0)
    n, sst, n_dead = acts.shape[0], m2.sum().item(), int((~fired).sum())
    nmse = sse / sst if sst > 0 else float("nan")
    return {"fve": 1.0 - nmse, "normalised_mse": nmse, "mse": sse / n, "l0": l0 / n,
            "n_dead": n_dead, "dead_share": n_dead / sae.d_sae}


def loss_recovered(clean_loss: float, sae_loss: float, zero_loss: float) -> float:
    """Share of the loss gap closed by splicing in the SAE: (zero - sae) / (zero - clean).

    clean_loss: model loss; sae_loss: with the activation replaced by its reconstruction;
    zero_loss: with it zero-ablated. 1 means a perfect substitute, 0 no better than ablation.
    """
    gap = zero_loss - clean_loss
    if gap == 0:
        raise ValueError("zero-ablation loss equals the clean loss: loss recovered is undefined")
    return (zero_loss - sae_loss) / gap
