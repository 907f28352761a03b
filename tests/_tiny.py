"""Tiny random Hugging Face models, one per family, for the activation-access tests.

Each is built straight from a `transformers` config (no download, a few milliseconds) and is small enough that a
forward pass is instant. The configs keep the awkward cases of the real models: grouped key/value heads (Llama,
Mistral, Gemma-3), a head size that is not d_model / n_heads (Gemma-3, like Gemma-3-270M's 256), a sliding-window layer
(Gemma-3) and a bidirectional encoder with a post-LayerNorm residual (BERT).
"""
import torch
import transformers as tf

VOCAB = 97
FAMILIES = ("gpt2", "llama", "gemma3", "bert", "mistral")
CAUSAL = ("gpt2", "llama", "gemma3", "mistral")


def tiny_config(family: str, **overrides):
    """A `transformers` config for a 2-layer (Mistral: 1-layer) model with 4 heads; `overrides` replace fields."""
    common = dict(vocab_size=VOCAB, max_position_embeddings=64, hidden_size=32, intermediate_size=64,
                  num_hidden_layers=2, num_attention_heads=4)
    if family == "gpt2":
        kw = dict(vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
        return tf.GPT2Config(**{**kw, **overrides})
    if family == "llama":
        return tf.LlamaConfig(**{**common, "num_key_value_heads": 2, **overrides})
    if family == "mistral":
        return tf.MistralConfig(**{**common, "num_hidden_layers": 1, "num_key_value_heads": 2, **overrides})
    if family == "gemma3":
        kw = dict(common, num_key_value_heads=2, head_dim=16, sliding_window=4,
                  layer_types=["sliding_attention", "full_attention"])
        return tf.Gemma3TextConfig(**{**kw, **overrides})
    if family == "bert":
        return tf.BertConfig(**{**common, **overrides})
    raise ValueError(f"unknown family {family!r}")


_CLASSES = {"gpt2": tf.GPT2LMHeadModel, "llama": tf.LlamaForCausalLM, "mistral": tf.MistralForCausalLM,
            "gemma3": tf.Gemma3ForCausalLM, "bert": tf.BertForMaskedLM}


def tiny_model(family: str, seed: int = 0, attn_implementation: str = "eager", **overrides):
    """A randomly initialised tiny model in eval mode (dropout off), float32."""
    torch.manual_seed(seed)
    cfg = tiny_config(family, **overrides)
    cfg._attn_implementation = attn_implementation
    return _CLASSES[family](cfg).eval()


def tiny_inputs(batch: int = 3, seq: int = 8, seed: int = 1) -> torch.Tensor:
    """Random token ids, shape (batch, seq)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, VOCAB, (batch, seq), generator=g)


def perturbed_copy(model, scale: float = 0.05, seed: int = 2):
    """A copy of `model` whose transformer blocks (not embeddings, final norm or head) are perturbed.

    Stands in for a fine-tuned model: same architecture, same unembedding, different layers.
    """
    import copy

    from lib.hooks import model_spec

    tuned = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model_spec(tuned).blocks.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return tuned
