"""06_synthesis, build: every chapter's base -> tuned pairs through the three lenses, cached per pair and seed.

The pairs come from `lib.chapters.<name>.build.synthesis_pairs` for each name of `lib.chapters.SYNTHESIS_SOURCES`
(an explicit list), loaded from the chapters' caches. The lens measurements of one pair are an artifact keyed by
the content of the pair's two models and inputs (a SHA-256 over their tensors), the settings that change the
numbers (`debiased`, `chunk`) and the source of the code that computes them (this module, `lib.lenses`,
`lib.hooks`, `lib.similarity` and the module of the chapter's metric), so a warm run loads them instead of running
the forward passes again. Both CKA row choices are measured (the page shows both), and the metric of every patched
run is kept raw: `min_gap` applies when the recovery is computed, so it is not part of the key.

Every pair also gets the two references of the reuse index (`lib.lenses.reuse_index`), measured with the same CKA
lens on the same inputs and cached the same way: a **null**, CKA(null, base), and a **seed ceiling**,
CKA(tuned, tuned'), where tuned' is the same pair's tuned model of the chapter's next seed (the last seed wraps to
the first), and only where the two start from the same base: a *sibling* fine-tune, whose base has the same trunk
(`trunk_fingerprint`: every parameter but the read-out heads). Two tuned models of different bases (chapter 3
trains one base per seed; the scratch model starts from its own initialisation each seed) are not a ceiling, so
those pairs, like a chapter with one seed, get none, and their index is a lower bound (`NO_SIBLING`). The null is the model the chapter trained from scratch on the
same task where it has one (`SCRATCH_NULLS`, an explicit list: Lin's scratch model for Lin's fine-tune); every
other pair gets the base's architecture freshly initialised (`lib.lenses.random_init`, seed `NULL_SEED` + the seed
index), which every pair also gets as a second null so the two can be compared where both exist. The null is
patched into the base as well (the patching lens's null: how much of the tuned model's gain states that share
nothing with the base "recover").

Each chapter's own results record (`results/<notebook>.json`) says whether its base could do its task at this
scale: the share of its claims that were testable gates the synthesis's rule for its pairs (`chapter_testable`).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from lib import lenses, models
from lib.artifacts import load_or_compute
from lib.chapters import NOTEBOOKS, SYNTHESIS_SOURCES
from lib.chapters.synthesis.config import CHAPTER, Config
from lib.claims import NOT_TESTABLE
from lib.hooks import model_spec
from lib.paths import ROOT, results_dir

BOOK_RESULTS = ROOT / "book" / "notebooks" / "results"
ARRAYS = ("cka_readout", "cka_all", "weight", "m_patched")
NULL_SCRATCH, NULL_RANDOM = "scratch", "random init"
# pair -> the pair of the same chapter and seed whose tuned model was trained from scratch on the same task
SCRATCH_NULLS = {("lin", "lin_tuned"): "lin_scratch"}
# (chapter, pair) -> the pair it is the null of: a control shown beside that pair, not a claim of its own
NULL_PAIRS = {(m, null): tuned for (m, tuned), null in SCRATCH_NULLS.items()}
# parameter-name parts of the read-out heads, which no lens reads (a classifier grafted onto a base, a tied unembedding)
HEAD_PARTS = ("lm_head", "classifier", "pooler", "score.", "cls.")
ONE_SEED = "one seed"
NO_SIBLING = "no sibling: the seeds' bases differ"
NULL_SEED = 10_000  # the random-init null of seed index i is drawn from seed NULL_SEED + i
SCALARS = ("cka_final_readout", "cka_final_all", "head_change", "m_base", "m_tuned", "rows_readout", "rows_all")


class ChapterNotReady(RuntimeError):
    """A chapter's synthesis_pairs failed (usually: its models are not cached in this profile)."""


@dataclass
class PairLens:
    """The three lenses of one pair at one seed (or, after `measure.aggregate`, the mean over its seeds); every
    array has one value per layer point (n_layers + 1)."""

    notebook: str
    module: str
    name: str
    family: str
    n_layers: int
    d_model: int
    n_params: int
    n_rows: int  # CKA rows (token positions) of the chosen readout
    cka: np.ndarray  # rows = cfg.tokens
    cka_alt: np.ndarray  # rows = the other choice ("all" if cfg.tokens is "readout", and the reverse)
    weight: np.ndarray
    head_change: float
    m_base: float
    m_tuned: float
    m_patched: np.ndarray
    recovery: np.ndarray
    seed_index: int = 0
    cka_final: float = float("nan")  # CKA after the final norm (cfg.tokens rows); NaN without a final norm
    chapter_testable: float | None = None  # share of the chapter's own claims testable at this scale
    cached: bool = False  # the lenses were loaded from the cache
    # the reuse index's references (cfg.tokens rows / the other rows); NaN where not measured
    null_kind: str = NULL_RANDOM  # which null the index uses: NULL_SCRATCH or NULL_RANDOM
    null_cka: np.ndarray | None = None  # CKA(null, base) per layer point
    null_cka_alt: np.ndarray | None = None
    random_null_cka: np.ndarray | None = None  # CKA(random init, base): the same as null_cka without a scratch model
    null_m_patched: np.ndarray | None = None  # the metric of the base with the null's residual stream patched in
    ceiling_cka: np.ndarray | None = None  # CKA(tuned, tuned of the next seed); NaN with one seed
    ceiling_cka_alt: np.ndarray | None = None
    no_ceiling: str = ONE_SEED  # why there is no ceiling (ONE_SEED or NO_SIBLING); "" once one is measured
    # after aggregation: the per-seed lenses, and the per-layer sd over them of cka / weight / recovery
    runs: list = field(default_factory=list, repr=False)
    sd: dict = field(default_factory=dict, repr=False)

    @property
    def n_seeds(self) -> int:
        return max(1, len(self.runs))

    @property
    def depth(self) -> np.ndarray:
        return lenses.depth_fraction(self.n_layers)

    def __post_init__(self):
        nan = np.full(self.n_layers + 1, np.nan)
        for name in ("null_cka", "null_cka_alt", "random_null_cka", "null_m_patched", "ceiling_cka",
                     "ceiling_cka_alt"):
            if getattr(self, name) is None:
                setattr(self, name, nan.copy())


def other_tokens(cfg: Config) -> str:
    return "all" if cfg.tokens == "readout" else "readout"


def sources(cfg: Config) -> list[tuple[str, str]]:
    """(notebook, chapter) of every synthesis source in the book's order, restricted to `cfg.chapters` if set."""
    return [(nb, m) for nb, m in NOTEBOOKS.items()
            if m in SYNTHESIS_SOURCES and (not cfg.chapters or nb in cfg.chapters)]


def chapter_pairs(notebook: str, module: str, profile: str, seed_index: int = 0) -> list[lenses.Pair] | None:
    """The chapter's pairs for its `seed_index`-th seed, None past its last seed; any other failure becomes one
    ChapterNotReady naming the notebook to run first."""
    fn = importlib.import_module(f"lib.chapters.{module}.build").synthesis_pairs
    try:
        return [lenses.Pair.from_dict(p) for p in fn(profile, seed_index=seed_index)]
    except IndexError:
        if seed_index == 0:
            raise
        return None
    except Exception as e:
        raise ChapterNotReady(
            f"{CHAPTER} reads the cached models of {notebook}: run {notebook} in the {profile} profile first: "
            f"make run NB={notebook} PROFILE={profile}  ({notebook}'s synthesis_pairs raised "
            f"{type(e).__name__}: {e})") from e


# ---------------------------------------------------------------------------------------------- cache keys
def _hash_tensor(h, name: str, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def model_fingerprint(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> str:
    """16 hex digits of SHA-256 over the names, dtypes, shapes and values of the model's parameters and buffers
    (those whose name contains a part in `skip` left out)."""
    h = hashlib.sha256(type(model).__name__.encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if not any(part in name for part in skip):
            _hash_tensor(h, name, t)
    return h.hexdigest()[:16]


def trunk_fingerprint(model: torch.nn.Module) -> str:
    """`model_fingerprint` over what the lenses read: every parameter and buffer but the read-out heads
    (`HEAD_PARTS`). Two tuned models are siblings, each the other's seed ceiling, only when their bases have the
    same trunk."""
    return model_fingerprint(model, HEAD_PARTS)


def inputs_fingerprint(inputs) -> str:
    h = hashlib.sha256()
    for k, v in sorted((inputs if isinstance(inputs, dict) else {"input_ids": inputs}).items()):
        _hash_tensor(h, k, v) if torch.is_tensor(v) else h.update(f"{k}:{v!r}".encode())
    return h.hexdigest()[:16]


def _metric_module(metric) -> str:
    fn = getattr(metric, "func", metric)  # a functools.partial: the function it wraps
    module = inspect.getmodule(fn)
    return module.__name__ if module else "lib.lenses"


# ---------------------------------------------------------------------------------------------- the lenses
def _compute_lenses(pair: lenses.Pair, cfg: Config, out: Path) -> dict:
    base, tuned, inputs = pair.base, pair.tuned, pair.inputs
    arrays = {}
    for tokens in ("readout", "all"):
        cka = lenses.cka_lens(base, tuned, inputs, tokens, cfg.debiased, cfg.chunk, final_norm=True)
        arrays[f"cka_{tokens}"], arrays[f"cka_final_{tokens}"] = cka[:-1], cka[-1]
        arrays[f"rows_{tokens}"] = int(lenses.token_mask(base, inputs, tokens).sum())
    arrays["weight"], arrays["head_change"] = lenses.weight_lens(base, tuned)
    patch = lenses.patching_lens(base, tuned, inputs, pair.metric, cfg.min_gap)  # its recovery is not kept
    arrays.update(m_base=patch["m_base"], m_tuned=patch["m_tuned"], m_patched=patch["m_patched"])
    np.savez(out / "lenses.npz", **{k: np.asarray(v, dtype=float) for k, v in arrays.items()})
    return {"pair": pair.name, "n_layers": model_spec(base).n_layers}


def lens_key(notebook: str, pair: lenses.Pair, cfg: Config) -> dict:
    return {"notebook": notebook, "pair": pair.name, "base": model_fingerprint(pair.base),
            "tuned": model_fingerprint(pair.tuned), "inputs": inputs_fingerprint(pair.inputs),
            "debiased": cfg.debiased, "chunk": cfg.chunk}


def measure_pair(notebook: str, module: str, pair: lenses.Pair, cfg: Config, seed_index: int = 0) -> PairLens:
    """The three lenses of one pair, from the cache when this pair's models, inputs and settings were measured."""
    code = (__name__, "lib.lenses", "lib.hooks", "lib.similarity", _metric_module(pair.metric))
    art = load_or_compute("synthesis_lenses", lens_key(notebook, pair, cfg),
                          lambda out: _compute_lenses(pair, cfg, out), recompute=cfg.recompute, code=code)
    with np.load(art.path / "lenses.npz") as z:
        v = {k: z[k] for k in ARRAYS} | {k: float(z[k]) for k in SCALARS}
    spec, chosen, other = model_spec(pair.base), cfg.tokens, other_tokens(cfg)
    return PairLens(notebook, module, pair.name, spec.family, spec.n_layers, spec.d_model,
                    models.n_params(pair.base), int(v[f"rows_{chosen}"]), v[f"cka_{chosen}"], v[f"cka_{other}"],
                    v["weight"], v["head_change"], v["m_base"], v["m_tuned"], v["m_patched"],
                    lenses.recovery(v["m_patched"], v["m_base"], v["m_tuned"], cfg.min_gap), seed_index,
                    cka_final=v[f"cka_final_{chosen}"], cached=art.cached)


# ---------------------------------------------------------------------------------------------- index references
def _cka_both(a: torch.nn.Module, b: torch.nn.Module, inputs, cfg: Config) -> dict:
    """CKA(a, b) per layer point on both row choices (the mask from `a`)."""
    return {f"cka_{t}": lenses.cka_lens(a, b, inputs, t, cfg.debiased, cfg.chunk) for t in ("readout", "all")}


def _load_arrays(art) -> dict:
    with np.load(art.path / "lenses.npz") as z:
        return {k: z[k] for k in z.files}


def _save(out: Path, arrays: dict, pair: str) -> dict:
    np.savez(out / "lenses.npz", **{k: np.asarray(v, dtype=float) for k, v in arrays.items()})
    return {"pair": pair}


def _settings(pair: lenses.Pair, cfg: Config) -> dict:
    return {"inputs": inputs_fingerprint(pair.inputs), "debiased": cfg.debiased, "chunk": cfg.chunk}


def _code(pair: lenses.Pair) -> tuple[str, ...]:
    return (__name__, "lib.lenses", "lib.hooks", "lib.similarity", _metric_module(pair.metric))


def null_lens(notebook: str, pair: lenses.Pair, null: torch.nn.Module, kind: str, cfg: Config) -> dict:
    """CKA(null, base) on both row choices, and the metric of the base with the null's residual stream patched in
    at each layer point (`m_patched`): cached, keyed like the pair's lenses plus the null's content."""
    def compute(out: Path) -> dict:
        arrays = _cka_both(pair.base, null, pair.inputs, cfg)
        arrays["m_patched"] = lenses.patching_lens(pair.base, null, pair.inputs, pair.metric)["m_patched"]
        return _save(out, arrays, pair.name)

    key = {"notebook": notebook, "pair": pair.name, "base": model_fingerprint(pair.base), "null": model_fingerprint(null),
           "null_kind": kind, **_settings(pair, cfg)}
    return _load_arrays(load_or_compute("synthesis_null", key, compute, recompute=cfg.recompute, code=_code(pair)))


def ceiling_lens(notebook: str, pair: lenses.Pair, other: torch.nn.Module, cfg: Config) -> dict:
    """CKA(tuned, tuned') on both row choices, on this pair's inputs: the seed ceiling, cached."""
    key = {"notebook": notebook, "pair": pair.name, "tuned": model_fingerprint(pair.tuned),
           "other": model_fingerprint(other), **_settings(pair, cfg)}
    art = load_or_compute("synthesis_ceiling", key,
                          lambda out: _save(out, _cka_both(pair.tuned, other, pair.inputs, cfg), pair.name),
                          recompute=cfg.recompute, code=_code(pair))
    return _load_arrays(art)


def add_nulls(lens: PairLens, pair: lenses.Pair, same_seed: list[lenses.Pair], cfg: Config) -> None:
    """Fill in `lens`'s nulls: the scratch model where `SCRATCH_NULLS` names one, and always a random init."""
    chosen, other = cfg.tokens, other_tokens(cfg)
    random = null_lens(lens.notebook, pair, lenses.random_init(pair.base, NULL_SEED + lens.seed_index),
                       NULL_RANDOM, cfg)
    lens.random_null_cka = random[f"cka_{chosen}"]
    scratch_of = SCRATCH_NULLS.get((lens.module, lens.name))
    scratch = next((p.tuned for p in same_seed if p.name == scratch_of), None) if scratch_of else None
    if scratch_of and scratch is None:
        raise ChapterNotReady(f"{lens.notebook} offered no pair {scratch_of!r}, the scratch null of {lens.name!r}")
    v = null_lens(lens.notebook, pair, scratch, NULL_SCRATCH, cfg) if scratch is not None else random
    lens.null_kind = NULL_SCRATCH if scratch is not None else NULL_RANDOM
    lens.null_cka, lens.null_cka_alt, lens.null_m_patched = v[f"cka_{chosen}"], v[f"cka_{other}"], v["m_patched"]


def add_ceilings(lenses_: list[PairLens], pairs: list[lenses.Pair], trunks: dict[str, str],
                 next_seed: list[lenses.Pair], next_trunks: dict[str, str], cfg: Config) -> None:
    """Fill in each lens's seed ceiling from the tuned model of the same pair at the next seed (matched by name),
    where that model is a sibling: its base has the same trunk (`trunks`: pair name -> `trunk_fingerprint` of the
    base). Otherwise the lens records why it has none."""
    others = {p.name: p.tuned for p in next_seed}
    for lens, pair in zip(lenses_, pairs):
        if pair.name not in others:
            continue
        if trunks[pair.name] != next_trunks.get(pair.name):
            lens.no_ceiling = NO_SIBLING
            continue
        v = ceiling_lens(lens.notebook, pair, others[pair.name], cfg)
        lens.ceiling_cka, lens.ceiling_cka_alt = v[f"cka_{cfg.tokens}"], v[f"cka_{other_tokens(cfg)}"]
        lens.no_ceiling = ""


def measure_chapter(notebook: str, module: str, seeds, cfg: Config, testable: float | None = None) -> list[PairLens]:
    """Every pair of every seed (`seeds`: an iterable of each seed's pair list) through the lenses and the index's
    references. Holds at most the previous seed's pairs and the first seed's tuned models besides the current ones."""
    out, first, prev = [], None, None
    for i, pairs in enumerate(seeds):
        trunks = {p.name: trunk_fingerprint(p.base) for p in pairs}
        now = []
        for pair in pairs:
            lens = measure_pair(notebook, module, pair, cfg, i)
            lens.chapter_testable = testable
            add_nulls(lens, pair, pairs, cfg)
            now.append(lens)
        if prev is not None:
            add_ceilings(*prev, pairs, trunks, cfg)
        if first is None:
            first = ([lenses.Pair(p.name, None, p.tuned, None, p.metric) for p in pairs], trunks)
        prev = (now, pairs, trunks)
        out += now
    if prev is not None and first is not None and prev[0] and prev[0][0].seed_index > 0:
        add_ceilings(*prev, *first, cfg)  # the last seed's ceiling: the first seed
    return out


# ---------------------------------------------------------------------------------------------- testability
def _record(notebook: str, cfg: Config) -> dict | None:
    """The chapter's results record of this profile: from `cfg.results`, else this run's folder, then the book's."""
    folders = [cfg.results_folder()] if cfg.results else [results_dir(), BOOK_RESULTS]
    for folder in folders:
        path = Path(folder) / f"{notebook}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            if record.get("profile") == cfg.profile:
                return record
    return None


def chapter_testable(notebook: str, cfg: Config) -> float | None:
    """Share of the chapter's own claims that were not "not testable at this scale" (None: no record of this
    profile found, so the synthesis cannot tell whether the chapter's base could do its task)."""
    record = _record(notebook, cfg)
    if record is None or not record.get("claims"):
        return None
    claims = record["claims"]
    return sum(c["verdict"] != NOT_TESTABLE for c in claims) / len(claims)


def _seeds(notebook: str, module: str, cfg: Config):
    """The chapter's pair lists, one per seed, up to `cfg.n_seeds` (fewer where it trained fewer)."""
    for i in range(cfg.n_seeds):
        with torch.no_grad():
            pairs = chapter_pairs(notebook, module, cfg.profile, i)
        if pairs is None:
            return
        yield pairs


def sae_persistence(cfg: Config) -> dict | None:
    """The fourth lens, for Horn & Elliott's pairs: SAE-feature persistence with independent SAE seeds divided by the
    same-model seed control, from chapter 5's results record (claim `few_persist`); None if the record is absent."""
    record = _record("05_horn", cfg)
    c = next((c for c in (record or {}).get("claims", []) if c.get("id") == "few_persist"), None)
    if c is None:
        return None
    extra = c.get("extra") or {}
    indep, ctrl = extra.get("independent_seeds"), extra.get("control")
    ratio = indep / ctrl if indep is not None and ctrl else float("nan")
    return {"ratio": ratio, "independent": indep, "control": ctrl, "interval": c.get("interval"), "n": c.get("n"),
            "verdict": c.get("verdict")}


def run(cfg: Config) -> list[PairLens]:
    """Every pair of every chosen chapter through the three lenses, for each of the chapter's first `n_seeds`
    seeds, one chapter seed's models in memory at a time: the per-seed lenses (`measure.aggregate` averages them)."""
    out = []
    for nb, module in sources(cfg):
        out += measure_chapter(nb, module, _seeds(nb, module, cfg), cfg, chapter_testable(nb, cfg))
    if not out:
        raise ChapterNotReady(f"no chapter offered a pair (chapters: {list(cfg.chapters) or 'all'})")
    return out
