"""The word-level benchmark's pieces (issue #16) at tiny sizes: the baseline recipe's loop and
the stateful test pass both sides are scored with."""

import math

import numpy as np
import torch
import torch.nn.functional as F

from conftest import benchmark_module


def test_stateful_perplexity_at_batch_1_scores_every_token_as_one_pass():
    wb = benchmark_module("word_baseline")
    torch.manual_seed(0)
    model = wb.BaselineLSTM(30).eval()
    tokens = np.random.default_rng(0).integers(0, 30, 200)  # 200 > 5 windows of 35
    ppl, scored = wb.stateful_perplexity(model, tokens, torch.device("cpu"), batch=1)
    assert scored == 199  # every token but the first
    ids = torch.from_numpy(tokens).view(1, -1)
    with torch.no_grad():
        logits, _ = model(ids[:, :-1])  # the whole sequence in one forward
    want = F.cross_entropy(logits.reshape(-1, 30), ids[0, 1:])
    assert math.isclose(ppl, math.exp(float(want)), rel_tol=1e-5)


def test_baseline_recipe_trains_within_its_budget_and_anneals():
    wb = benchmark_module("word_baseline")
    pattern = np.tile(np.arange(10), 200)  # learnable: 0 1 2 ... 9 0 1 ...
    noise = np.random.default_rng(0).integers(0, 12, 400)  # validation the pattern does not fit
    cpu = torch.device("cpu")
    result = wb.train(pattern, noise, 12, budget=2.5, device=cpu, log=lambda s: None)
    assert result.steps > 0 and result.seconds < 2.5 + 2.0  # an evaluation's slack
    lrs = [p["lr"] for p in result.curve]  # the first evaluation is the best so far: lr 20
    assert lrs[0] == 20.0 and all(b in (a, a / 4) for a, b in zip(lrs, lrs[1:], strict=False))
    # learning the pattern makes the noise less likely: validation stalls, lr / 4
    assert len(lrs) >= 2 and lrs[-1] < 20.0
    ppl, _ = wb.stateful_perplexity(result.model, noise, cpu)  # the model kept: the best one
    assert round(ppl, 2) == min(p["val_ppl"] for p in result.curve)
