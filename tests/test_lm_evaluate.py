"""Retention-probe metrics of lifelong.lm on hand-made cases."""

import numpy as np
import pytest
import torch

from lifelong.lm.evaluate import (
    ProbeSet,
    greedy_continue,
    recall_scores,
    recognition_accuracy,
    sequence_losses,
)


class Out:
    def __init__(self, logits):
        self.logits = logits


class NextTokenTable(torch.nn.Module):
    """A fake causal LM: the next token is table[current token] with a sharp logit."""

    def __init__(self, table: dict[int, int], vocab: int = 16):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.vocab = vocab
        self.nxt = torch.arange(vocab)
        for a, b in table.items():
            self.nxt[a] = b

    def forward(self, input_ids):
        logits = torch.full((*input_ids.shape, self.vocab), -10.0)
        logits.scatter_(-1, self.nxt[input_ids].unsqueeze(-1), 10.0)
        return Out(logits + self.w)


def test_recognition_and_recall_hand_made():
    assert recognition_accuracy([1.0, 2.0, 3.0, 1.0], [2.0, 1.0, 4.0, 1.0]) == pytest.approx(
        (1 + 0 + 1 + 0.5) / 4
    )
    pred = torch.tensor([[1, 2, 3], [1, 2, 0]])
    tgt = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert recall_scores(pred, tgt) == (pytest.approx(5 / 6), 0.5)


def test_probe_set_on_a_memorizing_model():
    probe = [1, 2, 3, 4, 5, 6]  # the model "memorized" this chain; controls are never predicted
    model = NextTokenTable({1: 2, 2: 3, 3: 4, 4: 5, 5: 6})
    ps = ProbeSet(torch.tensor([probe]), torch.tensor([[7, 9, 8, 10, 12, 11]]), prefix_len=2)
    assert greedy_continue(model, ps.probes[:, :2], 4).tolist() == [[3, 4, 5, 6]]
    losses = sequence_losses(model, torch.cat([ps.probes, ps.controls]))
    assert losses[0] < 1e-6 < losses[1]
    r = ps.evaluate(model)
    assert r["recognition"] == 1.0 and r["recall_tokens"] == 1.0 and r["recall_exact"] == 1.0
    assert "recognition_vs_baseline" not in r
    ps.baseline = (torch.tensor([0.5]), torch.tensor([0.1]))  # probe loss fell by 0.5, control rose
    assert ps.evaluate(model)["recognition_vs_baseline"] == 1.0


def test_probe_windows_disjoint_and_deterministic():
    toks = np.arange(1000)
    a = ProbeSet.from_tokens(toks, 5, 20, seed=1)
    b = ProbeSet.from_tokens(toks, 5, 20, seed=1)
    assert torch.equal(a.probes, b.probes) and a.prefix_len == 10
    starts = {int(r[0]) for r in torch.cat([a.probes, a.controls])}
    assert len(starts) == 10 and all(s % 20 == 0 for s in starts)
