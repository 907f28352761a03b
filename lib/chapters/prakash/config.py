"""The parameters of notebook 03_prakash (validated; no verdict thresholds: those are constants in claims.py).

Imported by `make check` and `python -m lib.run check` on its own, so it imports neither torch nor pandas.
"""
from __future__ import annotations

from dataclasses import dataclass

from lib import precision
from lib.config import Config as _Config, ConfigError, param

GROUPS = ("VF", "PT", "PD", "SR")  # the circuit's head groups, in the order path patching finds them
TUNED = {"arith_bound": "tuned on arithmetic whose operands are bound to names (the Goat analogue)",
         "arith_pure": "tuned on arithmetic without binding (the strict analogue, a control)",
         "track": "tuned on more entity tracking (the positive control)"}
LOCAL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")  # = lib.models.LOCAL_MODELS (not imported: torch)


@dataclass(frozen=True)
class Config(_Config):
    notebook = "03_prakash"
    base_source: str = param("", doc="paper: the base model (hub id or folder); empty = the profile's default base")
    tuned_source: str = param("", doc="paper: the fine-tuned model (hub id or folder), used as `arith_bound`")
    allow_network: bool = param(False, doc="paper profile: let the hub loader download")
    local_model: str = param("smollm2-135m-instruct", choices=LOCAL_MODELS,
                             doc="local profile: the packaged pretrained model")
    device: str = param("cpu", choices=("cpu", "cuda", "auto"), doc="where models run ('auto': cuda if present)")
    n_seeds: int = param(3, lo=1, hi=20, doc="independent base/tuned model sets (seeds seed, seed+1, ...)")
    tuned: tuple[str, ...] = param(tuple(TUNED), choices=tuple(TUNED), doc="which tuned models to make")
    objects: str = param("nouns", choices=("nouns", "vocab"),
                         doc="object words: concrete nouns (the paper's kind), or any single-token word (tiny BPEs)")
    n_boxes: int = param(7, lo=2, hi=12, doc="boxes per prompt (the paper: 7)")
    test_size: int = param(500, lo=8, hi=10**5, doc="test prompts (the models' accuracy)")
    curve_size: int = param(200, lo=8, hi=10**5, doc="prompts per box count in the accuracy-by-boxes table")
    analysis_size: int = param(200, lo=8, hi=10**5, doc="the first test prompts (at most test_size) that the "
                                                        "circuit analyses use (faithfulness, CMAP, knockout)")
    val_size: int = param(200, lo=8, hi=10**5, doc="validation prompts (the base's learning curve)")
    base_layers: int = param(4, lo=1, hi=64, doc="smoke / tiny: layers of the chapter's own base (a Llama: RoPE, "
                                                 "RMSNorm, SwiGLU)")
    base_d_model: int = param(128, lo=8, hi=4096, doc="smoke / tiny: width of the base (d_mlp = 4 x d_model)")
    base_heads: int = param(4, lo=1, hi=64, doc="smoke / tiny: attention heads per layer of the base")
    base_steps: int = param(6000, lo=0, hi=10**6, doc="smoke / tiny: training steps of the base (warm-up, then "
                                                      "cosine decay to 0 at the last step; 0: a random-init base)")
    base_easy_steps: int = param(2000, lo=0, hi=10**6, doc="the first steps of the curriculum, on 2-3 boxes only; "
                                                           "then 2..n_boxes boxes, fewer boxes more often")
    base_batch: int = param(64, lo=1, hi=4096, doc="prompts per base training step (fresh prompts every step)")
    base_lr: float = param(1e-3, lo=1e-7, hi=1.0)
    eval_every: int = param(250, lo=1, hi=10**6, doc="steps between validation checks of the base (its curve)")
    arith_steps: int = param(400, lo=1, hi=10**6, doc="steps of each arithmetic fine-tune (arith_bound, arith_pure)")
    arith_lr: float = param(2e-3, lo=1e-7, hi=1.0)
    track_steps: int = param(400, lo=1, hi=10**6, doc="steps of further entity-tracking fine-tuning (track)")
    track_lr: float = param(2e-3, lo=1e-7, hi=1.0)
    batch_size: int = param(64, lo=1, hi=4096, doc="prompts per fine-tuning step")
    lora_rank: int = param(8, lo=0, hi=1024, doc="fine-tune LoRA adapters of this rank on q and v (Goat: 8; "
                                                 "0: every weight, as FLoat)")
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC)
    pp_size: int = param(100, lo=4, hi=10**4, doc="prompts for path patching (the paper: 300)")
    heads_base: tuple[int, ...] = param((3, 2, 2, 2), lo=1, hi=4096, doc="heads kept per group VF, PT, PD, SR (base)")
    heads_tuned: tuple[int, ...] = param((4, 3, 3, 3), lo=1, hi=4096,
                                         doc="heads per group of the tuned circuits (the paper takes more there)")
    mean_size: int = param(300, lo=4, hi=10**5, doc="reference prompts for the mean ablation")
    random_draws: int = param(10, lo=1, hi=1000, doc="random circuits of the same size (the paper: 10)")
    dcm_size: int = param(256, lo=8, hi=10**5, doc="DCM training prompts per desideratum (as many for test)")
    dcm_lam: float = param(0.01, lo=0.0, hi=100.0, doc="DCM sparsity weight λ (the paper: 0.01)")
    dcm_lr: float = param(0.1, lo=1e-5, hi=10.0)
    dcm_epochs: int = param(2, lo=1, hi=100)
    sweep_repeats: int = param(2, lo=1, hi=20, doc="timing repeats of the sweep-cost measurement")

    def validate(self):
        for name in ("heads_base", "heads_tuned"):
            if len(getattr(self, name)) != len(GROUPS):
                raise ConfigError(f"parameter {name!r} = {getattr(self, name)} must give 4 counts (VF, PT, PD, SR)")
        if self.base_d_model % self.base_heads:
            raise ConfigError(f"parameter 'base_d_model' = {self.base_d_model} must be divisible by "
                              f"'base_heads' = {self.base_heads}")
        if self.base_steps and self.base_easy_steps > self.base_steps:  # base_steps 0: an untrained base
            raise ConfigError(f"parameter 'base_easy_steps' = {self.base_easy_steps} exceeds "
                              f"base_steps = {self.base_steps}")
        if self.profile == "paper" and not (self.base_source and self.tuned_source):
            raise ConfigError("profile 'paper' needs parameters 'base_source' and 'tuned_source'")
        if self.tuned_source and self.n_seeds != 1:
            raise ConfigError("parameter 'n_seeds' must be 1 with a released tuned model ('tuned_source')")

    def heads(self, name: str) -> tuple[int, ...]:
        """Heads kept per group when path patching model `name` (base or a tuned model)."""
        return self.heads_base if name == "base" else self.heads_tuned

    def model_names(self) -> list[str]:
        return ["base", *self.tuned]
