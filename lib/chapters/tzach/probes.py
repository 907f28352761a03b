"""The readout primitives of chapter 4: the hidden states at the positions selected for masking, the logit lens
(the model's own MLM readout on any block), and the *tuned head* (the probe): a copy of the model's own MLM readout
trained further on one block's frozen states, as the tuned lens of Belrose et al. 2023 does for causal LMs. At
step 0 the tuned head is the logit lens, so training can only move it towards what the block holds; block 0 (the
embedding output) is defined by this readout: what a trained MLM head recovers from the embeddings alone.
Imported by `build` only, which caches what they compute."""
from __future__ import annotations

from dataclasses import dataclass

import copy

import torch
from torch import nn

from lib import evals, train


@dataclass
class MaskedStates:
    """Hidden states at the positions selected for masking, after every block."""
    h: torch.Tensor  # (n, L + 1, d_model); [:, 0] is the embedding output, [:, b] the output of block b
    true: torch.Tensor  # (n,) the original token
    kind: torch.Tensor  # (n,) 0 = [MASK], 1 = random token, 2 = unchanged


def masked_states(model, rows: dict, mask_id: int, special_ids, seed: int, batch: int = 64,
                  p: float = 0.15) -> MaskedStates:
    """Mask `rows` with the paper's evaluation protocol (seeded, 80/10/10 over p = 15 %; the study's base trained at
    its own `bert_mask_rate`) and keep every block's state at the selection."""
    g = torch.Generator().manual_seed(seed)
    ids, att = rows["input_ids"], rows["attention_mask"]
    never = att.eq(0) | torch.isin(ids, torch.tensor(list(special_ids)))
    masked, labels = train.mask_tokens(ids, mask_id, model.config.vocab_size, never, p, g)
    sel, dev = labels.ne(-100), next(model.parameters()).device
    order = att.sum(1).argsort()  # similar lengths together, each batch cut to its longest row

    def states(idx):  # (n_i, L + 1, d) at the selected positions of rows idx
        T = int(att[idx].sum(1).max())
        hs = block_states(model, input_ids=masked[idx, :T].to(dev), attention_mask=att[idx, :T].to(dev))
        return torch.stack(hs, 2)[sel[idx, :T].to(dev)].float().cpu()

    with evals.eval_mode(model):
        h = evals.batched(states, order, batch)
    sel = sel[order]
    shown, true = masked[order][sel], labels[order][sel]
    kind = torch.where(shown == mask_id, 0, torch.where(shown == true, 2, 1))
    return MaskedStates(h, true, kind)


def block_states(model, **inputs) -> tuple[torch.Tensor, ...]:
    """The embedding output and every block's output, each (B, T, d), all read the same way: as the block writes
    them to the residual stream. Hugging Face's `hidden_states` already are that for a post-LN BERT; a pre-LN model
    gives its last one after the final LayerNorm, so there the last block's own output is taken by a hook (the
    final norm belongs to the readout, `mlm_readout`, for every block alike)."""
    if model.config.model_type != "roberta-prelayernorm":
        return model(**inputs, output_hidden_states=True).hidden_states
    from lib import hooks

    kept = []
    with hooks.hooks(model, [(f"blocks.{model.config.num_hidden_layers - 1}.hook_resid_post",
                              lambda act, name: kept.append(act))]):
        out = model(**inputs, output_hidden_states=True)
    return (*out.hidden_states[:-1], kept[0])


def mlm_readout(model) -> nn.Module:
    """The module that turns one block's states (n, d) into vocabulary logits (n, V): BERT's `cls` head (post-LN:
    every block's output is already normed); for a pre-LN masked LM (RoBERTa-PreLayerNorm) the final LayerNorm
    followed by `lm_head`, applied to any block's output as `block_states` reads it (before that norm)."""
    if hasattr(model, "cls"):
        return model.cls
    if hasattr(model, "roberta_prelayernorm"):
        return nn.Sequential(model.roberta_prelayernorm.LayerNorm, model.lm_head)
    if hasattr(model, "lm_head"):
        return model.lm_head
    raise ValueError(f"no MLM readout known for {type(model).__name__}")


def lens_predictions(model, h: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Argmax of the model's own MLM readout on states h (n, d) from any block -> (n,) token ids (logit lens)."""
    dev, head = next(model.parameters()).device, mlm_readout(model)
    with evals.eval_mode(model):
        return evals.batched(lambda x: head(x.to(dev)).argmax(-1).cpu(), h, chunk)


class TunedHead(nn.Module):
    """A trainable copy of a model's MLM readout (n, d) -> (n, V): the tuned-lens probe (no `classes`: its outputs
    are token ids)."""
    classes = None

    def __init__(self, readout: nn.Module):
        super().__init__()
        self.readout = copy.deepcopy(readout)  # its own decoder: the tied embedding of the model stays untouched
        for p in self.readout.parameters():
            p.requires_grad_(True)

    def forward(self, h):  # (n, d) -> (n, V)
        return self.readout(h)


class ProbeHead(nn.Module):
    """A fresh MLM head (BERT's shape: dense -> GELU -> LayerNorm -> decoder), trained on frozen states.

    Its decoder covers only the token types among its training targets (`classes`): a head trained from scratch
    never ranks a type it was never shown first anyway, and a 4k-30k vocabulary would dominate the cost.
    """

    def __init__(self, d_model: int, classes: torch.Tensor):
        super().__init__()
        self.dense, self.norm = nn.Linear(d_model, d_model), nn.LayerNorm(d_model)
        self.decoder = nn.Linear(d_model, len(classes))
        self.register_buffer("classes", classes)  # (K,) token id of each output
        for lin in (self.dense, self.decoder):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, h):  # (n, d) -> (n, K) logits over `classes`
        return self.decoder(self.norm(nn.functional.gelu(self.dense(h))))


def train_probe(h: torch.Tensor, y: torch.Tensor, seed: int, steps: int, batch: int, lr: float,
                device=None, bf16: bool = False, init: nn.Module | None = None) -> nn.Module:
    """Train a head on states h (n, d) to predict tokens y (n,); AdamW, constant lr, seeded; bf16 autocast when
    `bf16` (the effective choice, lib.precision). `init`: the model's MLM readout (`mlm_readout`), copied and
    tuned (a TunedHead, the chapter's headline readout); None: a fresh ProbeHead over the types in y."""
    device = device or torch.device("cpu")
    classes = None if init is not None else y.unique()  # sorted
    target = y if classes is None else torch.searchsorted(classes, y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = (TunedHead(init) if init is not None else ProbeHead(h.shape[1], classes)).to(device)
        opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=0.01)
        g = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            idx = torch.randint(len(h), (min(batch, len(h)),), generator=g)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                loss = nn.functional.cross_entropy(head(h[idx].to(device)).float(), target[idx].to(device))
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    return head.eval()


def probe_predictions(head: nn.Module, h: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(n,) token ids: the head's top class for each state in h (n, d)."""
    dev = next(head.parameters()).device

    def top(x):
        k = head(x.to(dev)).argmax(-1)
        return (k if head.classes is None else head.classes[k]).cpu()

    with evals.eval_mode(head):
        return evals.batched(top, h, chunk)
