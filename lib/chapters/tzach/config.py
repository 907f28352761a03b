"""The parameters of notebook 04_tzach (validated before any work starts). No verdict thresholds: those are
constants of `claims.py`. Imports nothing heavy (`make check` imports only this module)."""
from __future__ import annotations

from dataclasses import dataclass

from lib import precision
from lib.config import Config as _Config, ConfigError, param
from lib.tasks import wordnet

CHAPTER = "04_tzach"
PAPER = "Tzach et al. 2025, arXiv 2509.03407"
# The packaged causal LMs of the local profile (lib.models.LOCAL_MODELS, which imports torch; a test keeps them equal)
LOCAL_MODELS = ("smollm2-135m-instruct", "gemma-3-270m")


@dataclass(frozen=True)
class Config(_Config):
    notebook = CHAPTER
    base_source: str = param("", doc="'' = the study's BERT base (00_base_models); else a folder or hub id of a "
                                     "BERT masked LM")
    allow_network: bool = param(False, doc="let the paper profile download base_source from the hub")
    device: str = param("auto", choices=("auto", "cpu", "cuda"), doc="where models run")
    bf16: bool | str = param("auto", choices=precision.SETTINGS, doc=precision.DOC + "; fine-tuning and probe heads")
    n_seeds: int = param(3, lo=1, hi=20, doc="seeds: mask draws of held-out windows (APT; pooled as more positions), task splits (fine-tuning)")
    n_ctx: int = param(128, lo=8, hi=512, doc="tokens per held-out window (capped by the model)")
    eval_rows: int = param(768, lo=4, hi=10**6, doc="held-out windows masked per seed for APT")
    probe_rows: int = param(1024, lo=4, hi=10**6, doc="training windows whose masked positions train the probes")
    probe_steps: int = param(200, lo=1, hi=10**6, doc="AdamW steps of each fresh MLM head (probe)")
    probe_batch: int = param(256, lo=1, hi=65536, doc="masked positions per probe step")
    probe_lr: float = param(3e-3, lo=1e-6, hi=1.0, doc="probe learning rate (constant)")
    apt_top_k: int = param(50, lo=1, hi=10**5, doc="k of APT(k): mean APT over the k most frequent token types")
    freq_bins: int = param(10, lo=2, hi=100, doc="log-spaced frequency bins for APT against frequency")
    ws_fractions: tuple[float, ...] = param((1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125), lo=1e-4, hi=1.0,
                                            doc="pre-training set sizes W_S, as fractions of the base's rows "
                                                "(the W_S claim's sign test needs 6 sizes)")
    ws_protocol: str = param("same_epochs", choices=("same_epochs", "same_steps"),
                             doc="smaller W_S: as many epochs (steps scale with W_S) or as many steps as the base")
    ws_same_steps: tuple[float, ...] = param((), lo=1e-4, hi=0.9999,
                                             doc="with same_epochs: sizes also pre-trained for the base's number of "
                                                 "steps, beside the sweep (more data against more compute)")
    ws_full_steps: int = param(0, lo=0, hi=10**7, doc="steps at W_S = 1 (0: the base's own; needed for base_source)")
    ws_lr: float = param(0.0, lo=0.0, hi=1.0, doc="learning rate of the W_S models (0: the base's recipe)")
    cluster_min_count: int = param(5, lo=1, hi=10**6, doc="token types selected fewer times are left out of clusters")
    topic_classes: tuple[str, ...] = param(wordnet.DEFAULT_TOPICS, choices=wordnet.NOUN_CLASSES,
                                           doc="WordNet lexicographer files of the topic task (DBpedia-like)")
    relations: tuple[str, ...] = param(wordnet.DEFAULT_RELATIONS, choices=tuple(wordnet.RELATIONS),
                                       doc="WordNet relations of the relation task (FewRel-like)")
    task_per_class: int = param(150, lo=4, hi=10**5, doc="examples per class in each task (train + test)")
    task_train_per_class: int = param(100, lo=2, hi=10**5, doc="of which in the training split")
    task_max_len: int = param(48, lo=8, hi=512, doc="tokens per task input (longer ones are cut)")
    ft_steps: int = param(300, lo=1, hi=10**6, doc="steps of full fine-tuning (classifier for analysis 6)")
    ft_batch: int = param(32, lo=1, hi=4096)
    ft_lr: float = param(1e-3, lo=1e-6, hi=1.0, doc="peak fine-tuning learning rate (linear decay)")
    n_ft_seeds: int = param(1, lo=1, hi=20, doc="fully fine-tuned classifiers per task (seed = split seed)")
    n_boot: int = param(1000, lo=10, hi=10**6, doc="bootstrap resamples for correlation intervals")
    local_model: str = param("smollm2-135m-instruct", choices=LOCAL_MODELS, doc="local profile model")
    local_rows: int = param(16, lo=1, hi=10**5, doc="local profile: held-out blocks of local_n_ctx tokens")
    local_n_ctx: int = param(128, lo=8, hi=4096)

    def validate(self):
        if self.task_train_per_class >= self.task_per_class:
            raise ConfigError(f"parameter 'task_train_per_class' = {self.task_train_per_class} must be smaller than "
                              f"'task_per_class' = {self.task_per_class} (the rest is the test split)")
        if self.base_source and self.ws_full_steps == 0 and self.ws_fractions:
            raise ConfigError("parameter 'ws_full_steps' must be > 0 when 'base_source' is set (the W_S models "
                              "are trained here)")
        if len(set(self.ws_fractions)) != len(self.ws_fractions):
            raise ConfigError(f"parameter 'ws_fractions' = {list(self.ws_fractions)} repeats a value")
        if self.ws_same_steps and self.ws_protocol != "same_epochs":
            raise ConfigError("parameter 'ws_same_steps' needs ws_protocol = same_epochs (under same_steps every "
                              "size already has the base's steps): leave it empty")
        if len(set(self.ws_same_steps)) != len(self.ws_same_steps):
            raise ConfigError(f"parameter 'ws_same_steps' = {list(self.ws_same_steps)} repeats a value")
        for name in ("topic_classes", "relations"):
            if len(set(getattr(self, name))) < 2:
                raise ConfigError(f"parameter {name!r} needs at least two distinct values")
