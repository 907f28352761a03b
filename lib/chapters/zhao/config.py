"""The parameters of notebook 02_zhao, validated. No verdict thresholds (those are constants of `claims.py`).

Imported by `make check` alone, so nothing heavy at module level: the task, template and packaged-model names are
spelled out here, and tests/test_zhao.py checks them against lib.tasks.instructions and lib.models.
"""
from __future__ import annotations

from dataclasses import dataclass

from lib import precision
from lib.config import Config as _Config, ConfigError, param

TASKS = ("topic", "pos", "isa", "antonym", "synonym", "gloss_match", "reverse", "count", "num2words", "words2num",
         "code_type", "py_eval")  # lib.tasks.instructions.TASKS
TEMPLATES = ("plain", "llama2")  # lib.tasks.instructions.TEMPLATES
LOCAL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")  # lib.models.LOCAL_MODELS


@dataclass(frozen=True)
class Config(_Config):
    notebook = "02_zhao"
    tasks: tuple[str, ...] = param(TASKS, choices=TASKS, doc="instruction tasks (lib.tasks.instructions)")
    held_out: tuple[str, ...] = param(("code_type", "py_eval"), choices=TASKS,
                                      doc="tasks left out of E1's mixture (the unseen-task question): a whole "
                                          "cluster, so that no held-out task has a seen sibling")
    n_train: int = param(800, lo=4, hi=10**6, doc="training examples per task")
    n_test: int = param(300, lo=4, hi=10**5, doc="test examples per task (CKA and accuracy)")
    n_seeds: int = param(3, lo=1, hi=10, doc="seeds of every tuned model (C_t and E1)")
    control_steps: int = param(100, lo=1, hi=10**6, doc="optimizer steps of each control model C_t")
    e1_steps: int = param(300, lo=1, hi=10**6, doc="optimizer steps of the multi-task model E1")
    batch_size: int = param(16, lo=1, hi=4096, doc="examples per step (the paper: 4 x 4 accumulation = 16)")
    lr: float = param(3e-3, lo=1e-7, hi=1.0, doc="peak learning rate (cosine decay, 10% warm-up)")
    lora_rank: int = param(8, lo=0, hi=1024, doc="LoRA rank (0 = full fine-tuning); the paper: 8")
    lora_alpha: float = param(16.0, lo=0.1, hi=1e4, doc="LoRA alpha; the paper: 16")
    lora_targets: tuple[str, ...] = param(("c_attn",), doc="module names given LoRA adapters (GPT-2's fused q/k/v "
                                          "projection is c_attn; Llama/Gemma: q_proj, v_proj)")
    max_len: int = param(80, lo=8, hi=4096, doc="longest prompt + answer in tokens (prompts cut from the left)")
    template: str = param("plain", choices=TEMPLATES, doc="instruction template")
    synthesis_task: str = param("count", choices=TASKS, doc="the control model offered to the synthesis chapter")
    local_model: str = param("gemma-3-270m", choices=LOCAL_MODELS, doc="local profile: packaged model")
    paper_model: str = param("meta-llama/Llama-2-7b-hf", doc="paper profile: hub id or local folder")
    allow_network: bool = param(False, doc="paper profile: let load_hub reach the Hugging Face hub")
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC + "; analysis stays float32")
    dtype: str = param("float32", choices=("float32", "bfloat16"), doc="weights dtype of the base (paper: bfloat16)")
    device: str = param("cpu", choices=("cpu", "cuda", "auto"), doc="where models run")
    threads: int = param(0, lo=0, hi=256, doc="torch CPU threads (0 = the process's own: `make book` gives each "
                         "kernel its share of the cores)")

    def validate(self):
        if len(set(self.tasks)) != len(self.tasks):
            raise ConfigError("parameter 'tasks' names a task twice")
        if missing := [t for t in self.held_out if t not in self.tasks]:
            raise ConfigError(f"parameter 'held_out' = {missing[0]!r} is not one of the chosen tasks")
        if len(self.tasks) - len(set(self.held_out)) < 1:
            raise ConfigError("parameter 'held_out' leaves no task for E1's mixture")
        if self.synthesis_task not in self.tasks:
            raise ConfigError(f"parameter 'synthesis_task' = {self.synthesis_task!r} is not one of the chosen tasks")

    @property
    def seen(self) -> tuple[str, ...]:
        """The tasks in E1's training mixture."""
        return tuple(t for t in self.tasks if t not in self.held_out)

    @property
    def base_source(self) -> str:
        """E0 for `lib.bases.load`: the study's GPT-style base (smoke, tiny), a packaged model (local) or the hub
        model or folder (paper)."""
        return {"local": f"local:{self.local_model}", "paper": self.paper_model}.get(self.profile, "study:gpt")
