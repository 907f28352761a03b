"""The parameters of notebook 05_horn, validated before any work starts.

No verdict thresholds here: the matching correlation that decides the verdicts (the paper's r >= 0.8) and every
margin are constants of `claims.py`. This module imports nothing heavy (`make check` imports only it).
"""
from __future__ import annotations

from dataclasses import dataclass

from lib import precision
from lib.config import Config as _Config, ConfigError, param

# the paper's three checkpoints on the Hugging Face hub (the merge is recomputed with lib.merging)
HUB = {"base": "nilq/baby-python-mistral-1L-tiny-base", "stories": "nilq/baby-python-mistral-1L-tiny-TinyStories-ft",
       "lua": "nilq/baby-python-mistral-1L-tiny-lua-ft"}


@dataclass(frozen=True)
class Config(_Config):
    notebook = "05_horn"
    base_source: str = param("study", choices=("study", "hub"),
                             doc="study: the one-layer base of 00_base_models; hub: a Hugging Face id or folder")
    base_profile: str = param("", choices=("", "smoke", "tiny"),
                              doc="profile of the study's base model ('' = this profile; local and paper use tiny)")
    hub_base: str = param(HUB["base"], doc="base model (hub id or folder) when base_source=hub")
    hub_tokenizer: str = param("", doc="tokenizer (hub id or folder) when base_source=hub; '' = the base's own")
    hub_stories: str = param("", doc="a ready stories fine-tune (hub id or folder); '' = fine-tune here")
    hub_lua: str = param("", doc="a ready Lua fine-tune (hub id or folder); '' = fine-tune here")
    allow_network: bool = param(False, doc="let the hub loader download (paper profile only)")
    n_ctx: int = param(128, lo=8, hi=4096, doc="fine-tuning / accuracy block length (capped at the model's)")
    ft_steps: int = param(250, lo=1, hi=10**6, doc="fine-tuning steps per domain")
    ft_batch_size: int = param(16, lo=1, hi=4096, doc="fine-tuning sequences per step")
    ft_lr: float = param(3e-4, lo=1e-8, hi=1.0, doc="fine-tuning peak AdamW lr (cosine, 10% warm-up)")
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC + "; fine-tuning and SAE training")
    merge_t: float = param(0.58, lo=0.0, hi=1.0, doc="SLERP t from lua (0) towards stories (1); paper 0.58")
    sweep_ts: tuple[float, ...] = param((0.0, 0.2, 0.4, 0.6, 0.8, 1.0), lo=0.0, hi=1.0,
                                        doc="t values of the interpolation sweep (merge_t is added)")
    eval_blocks: int = param(32, lo=1, hi=10**5, doc="validation blocks per domain for next-token accuracy")
    sae_expansion: int = param(2, lo=1, hi=64, doc="SAE dictionary size / d_mlp (paper 16)")
    sae_features: int = param(0, lo=0, hi=10**7, doc="SAE dictionary size; 0: sae_expansion x d_mlp")
    sae_kind: str = param("relu", choices=("relu", "topk"),
                          doc="relu: L1-penalised ReLU SAE (the paper's); topk: the sae_k largest features a token")
    sae_k: int = param(0, lo=0, hi=10**5, doc="active features a token of a TopK SAE (sae_kind topk; 0 with relu)")
    sae_l1: float = param(4e-3, lo=0.0, hi=100.0, doc="L1 coefficient (lib.sae units: normalised MSE + l1 * |f|_1)")
    sae_l1_stories: float = param(-1.0, lo=-1.0, hi=100.0, doc="L1 of the stories SAE (-1: sae_l1; paper 10x)")
    sae_lr: float = param(2e-3, lo=1e-8, hi=1.0, doc="SAE Adam lr (paper 1e-4)")
    sae_batch_size: int = param(128, lo=1, hi=10**6, doc="activations (tokens) per SAE step")
    sae_steps: int = param(800, lo=1, hi=10**7, doc="SAE training steps")
    sae_tokens: int = param(102_400, lo=64, hi=10**9, doc="activations per model for SAE training")
    sae_ctx: int = param(24, lo=2, hi=4096, doc="block length of SAE data and comparison tokens (paper 24)")
    sae_dead_window: int = param(200, lo=1, hi=10**7, doc="steps without firing before a feature is resampled")
    sae_eval_tokens: int = param(8192, lo=64, hi=10**8, doc="held-out tokens for FVE, loss recovered, dead share")
    n_seeds: int = param(3, lo=2, hi=20, doc="SAE seeds (>= 3 for the headline shares)")
    finetune_seeds: bool = param(False, doc="vary the fine-tuning seed with the SAE seed (2 fine-tunes a seed)")
    compare_tokens: int = param(12_288, lo=48, hi=10**8, doc="comparison tokens (held-out base data)")
    min_fires: int = param(3, lo=1, hi=10**6, doc="a feature is alive if it fires on this many comparison tokens")
    top_k: int = param(20, lo=1, hi=10_000, doc="top activations that label a feature")
    device: str = param("auto", choices=("auto", "cpu", "cuda"), doc="where SAEs, models and correlations run")

    def validate(self):
        if self.base_source == "study" and self.profile == "paper" and self.base_profile != "tiny":
            raise ConfigError("parameter 'base_source' = 'study' needs base_profile='tiny' in the paper profile")
        if self.compare_tokens < self.sae_ctx or self.sae_eval_tokens < self.sae_ctx:
            raise ConfigError(f"parameters 'compare_tokens' and 'sae_eval_tokens' must be >= sae_ctx={self.sae_ctx}")
        if (self.sae_kind == "topk") != (self.sae_k > 0):
            raise ConfigError(f"parameter 'sae_k' = {self.sae_k}: give sae_k >= 1 with sae_kind='topk' and 0 with "
                              f"sae_kind='relu' (got sae_kind={self.sae_kind!r})")
        if self.sae_features and self.sae_k > self.sae_features:
            raise ConfigError(f"parameter 'sae_k' = {self.sae_k} exceeds the dictionary (sae_features="
                              f"{self.sae_features})")

    @property
    def base_profile_resolved(self) -> str:
        return self.base_profile or (self.profile if self.profile in ("smoke", "tiny") else "tiny")

    @property
    def data_profile(self) -> str:
        return self.base_profile_resolved if self.base_source == "study" else self.profile

    @property
    def ts(self) -> list[float]:
        return sorted(set(self.sweep_ts) | {self.merge_t})

    def ft_seed(self, i: int) -> int:
        return self.seed + i if self.finetune_seeds else self.seed
