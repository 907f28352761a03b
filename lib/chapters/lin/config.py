"""The parameters of notebook 01_lin, validated before any work starts.

No verdict thresholds here: they are constants of `claims.py`. This module imports nothing heavy (`make check`
imports only it), so the task's constraints that `lib.tasks.cdm.CDMSpec` also enforces are checked here in plain
Python (tests/test_lin.py checks the two agree).
"""
from __future__ import annotations

from dataclasses import dataclass

from lib import precision
from lib.config import Config as _Config, ConfigError, param

# `lib.models.LOCAL_MODELS` and `lib.tasks.cdm.FORMATS`, named here without importing torch (a test checks they match)
LOCAL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")
PROMPT_FORMATS = ("words", "compact")


def trained_differences(lo: int, hi: int) -> set[int]:
    """|first - second| of the training pairs: distinct numbers in lo..hi that do not sum to lo + hi."""
    return {abs(a - b) for a in range(lo, hi + 1) for b in range(lo, hi + 1) if a != b and a + b != lo + hi}


@dataclass(frozen=True)
class Config(_Config):
    notebook = "01_lin"
    base_source: str = param("gpt2", doc="paper profile: the pretrained model, a hub id or a local folder")
    allow_network: bool = param(False, doc="paper profile: let the hub loader download base_source")
    local_model: str = param("smollm2-135m-instruct", choices=LOCAL_MODELS,
                             doc="local profile: the packaged pretrained model")
    device: str = param("cpu", choices=("cpu", "cuda", "auto"), doc="where models train ('auto': cuda if present)")
    n_seeds: int = param(5, lo=2, hi=20, doc="independent runs of each kind (seeds seed, seed+1, ...)")
    prompt_format: str = param("compact", choices=PROMPT_FORMATS, doc="prompt template (lib.tasks.cdm.FORMATS)")
    answers: tuple[str, ...] = param((" left", " right"), doc="the two answer strings; each must be one token")
    num_lo: int = param(0, lo=0, hi=10**6, doc="smallest number shown")
    num_hi: int = param(9, lo=1, hi=10**6, doc="largest number shown; pairs summing to num_lo + num_hi are held out")
    levels: tuple[int, ...] = param((1, 2, 3, 4, 5, 6, 7, 8), lo=1, hi=10**6,
                                    doc="evidence strengths |first - second| of training prompts")
    train_size: int = param(4096, lo=16, hi=10**7, doc="training prompts")
    val_size: int = param(256, lo=8, hi=10**6, doc="validation prompts (criterion)")
    test_size: int = param(512, lo=16, hi=10**6, doc="test prompts (CKA, probes, ablations)")
    heldout_size: int = param(256, lo=8, hi=10**6, doc="prompts asking for held-out comparisons")
    psych_reps: int = param(1, lo=1, hi=100, doc="repetitions of the psychometric grid")
    criterion: float = param(0.9, lo=0.5, hi=1.0, doc="validation accuracy that counts as solving the task")
    batch_size: int = param(32, lo=1, hi=4096)
    eval_every: int = param(25, lo=1, hi=10**6, doc="steps between validation checks")
    warmup_steps: int = param(25, lo=0, hi=10**6, doc="linear learning-rate warm-up")
    schedule: str = param("cosine", choices=("constant", "cosine", "linear"),
                          doc="learning-rate decay after warm-up, over the step cap")
    weight_decay: float = param(0.01, lo=0.0, hi=1.0)
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC)
    tuned_lr: float = param(3e-4, lo=1e-7, hi=1.0, doc="AdamW learning rate of the fine-tunes (tuned, shuffled, frozen halves)")
    tuned_max_steps: int = param(800, lo=1, hi=10**6, doc="steps of every fine-tune")
    scratch_lr: float = param(2e-3, lo=1e-7, hi=1.0, doc="AdamW learning rate from scratch")
    scratch_max_steps: int = param(1000, lo=1, hi=10**6, doc="steps of the scratch runs")
    lora_rank: int = param(0, lo=0, hi=1024, doc="fine-tune LoRA adapters of this rank (0: full fine-tuning)")
    freeze_embeddings: bool = param(False, doc="keep the embeddings fixed while fine-tuning")
    words_seeds: int = param(0, lo=0, hi=20,
                             doc="tuned and scratch seeds also trained on the 'words' prompt, for its own verdict row "
                                 "(0: not run; ignored when prompt_format is already 'words')")
    probe_folds: int = param(5, lo=2, hi=20, doc="cross-validation folds of the linear probes")
    probe_C: float = param(1.0, lo=1e-6, hi=1e6, doc="inverse L2 strength of the probes")

    def validate(self):
        if len(self.answers) != 2 or self.answers[0] == self.answers[1]:
            raise ConfigError(f"parameter 'answers' = {self.answers!r} must hold two different strings")
        where = "parameters 'num_lo', 'num_hi', 'levels'"
        if self.num_lo >= self.num_hi:
            raise ConfigError(f"{where}: need num_lo < num_hi, got num_lo={self.num_lo}, num_hi={self.num_hi}")
        trained = trained_differences(self.num_lo, self.num_hi)
        if not self.levels or not set(self.levels) <= trained:
            raise ConfigError(f"{where}: levels must be differences of training pairs, {sorted(trained)}; "
                              f"got {self.levels}")
        if self.warmup_steps > min(self.tuned_max_steps, self.scratch_max_steps):
            raise ConfigError(f"parameter 'warmup_steps' = {self.warmup_steps} exceeds a step cap")
