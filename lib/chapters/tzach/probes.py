"""The readout primitives of chapter 4: the hidden states at the positions selected for masking, the logit lens
(the model's own MLM head on any block), and a fresh MLM head trained on one block's frozen states (the probe).
Imported by `build` only, which caches what they compute."""
from __future__ import annotations

from dataclasses import dataclass

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
    """Mask `rows` as in pre-training (seeded, 80/10/10 over 15 %) and keep every block's state at the selection."""
    g = torch.Generator().manual_seed(seed)
    ids, att = rows["input_ids"], rows["attention_mask"]
    never = att.eq(0) | torch.isin(ids, torch.tensor(list(special_ids)))
    masked, labels = train.mask_tokens(ids, mask_id, model.config.vocab_size, never, p, g)
    sel, dev = labels.ne(-100), next(model.parameters()).device
    order = att.sum(1).argsort()  # similar lengths together, each batch cut to its longest row

    def states(idx):  # (n_i, L + 1, d) at the selected positions of rows idx
        T = int(att[idx].sum(1).max())
        out = model(input_ids=masked[idx, :T].to(dev), attention_mask=att[idx, :T].to(dev), output_hidden_states=True)
        return torch.stack(out.hidden_states, 2)[sel[idx, :T].to(dev)].float().cpu()

    with evals.eval_mode(model):
        h = evals.batched(states, order, batch)
    sel = sel[order]
    shown, true = masked[order][sel], labels[order][sel]
    kind = torch.where(shown == mask_id, 0, torch.where(shown == true, 2, 1))
    return MaskedStates(h, true, kind)


def lens_predictions(model, h: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Argmax of the model's own MLM head on states h (n, d) from any block -> (n,) token ids (logit lens)."""
    dev = next(model.parameters()).device
    with evals.eval_mode(model):
        return evals.batched(lambda x: model.cls(x.to(dev)).argmax(-1).cpu(), h, chunk)


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
                device=None, bf16: bool = False) -> ProbeHead:
    """Train a ProbeHead on states h (n, d) to predict tokens y (n,); AdamW, constant lr, seeded; bf16 autocast
    when `bf16` (the effective choice, lib.precision)."""
    device = device or torch.device("cpu")
    classes = y.unique()  # sorted
    target = torch.searchsorted(classes, y)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = ProbeHead(h.shape[1], classes).to(device)
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


def probe_predictions(head: ProbeHead, h: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """(n,) token ids: the head's top class for each state in h (n, d)."""
    dev = next(head.parameters()).device
    with evals.eval_mode(head):
        return evals.batched(lambda x: head.classes[head(x.to(dev)).argmax(-1)].cpu(), h, chunk)
