"""Adaptive softmax on CUDA (issue #16): the trainer's bf16 autocast loss, and decoding (the
CUDA graph replays the stepper, whose last op is the head's log_prob) agrees with forward. Run
with ``pytest -m gpu`` on a machine with a GPU (benchmarks/gpu_suite.sh)."""

import pytest
import torch

from lstmgen import GenerationConfig, LanguageModel, ModelConfig
from lstmgen.tokenizers import WordTokenizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _model():
    torch.manual_seed(0)
    tok = WordTokenizer.fit([" ".join(f"w{i}" for i in range(60)) + "\n"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=16, hidden_size=32,
                      adaptive_cutoffs=[8, 24])  # fmt: skip
    return LanguageModel(cfg, tok, GenerationConfig())


def test_autocast_loss_trains_on_cuda():
    model = _model().cuda().train()
    ids = torch.randint(0, model.config.vocab_size, (4, 20), device="cuda")
    want, _ = model(ids[:, :-1], None, targets=ids[:, 1:])
    with torch.autocast("cuda", dtype=torch.bfloat16):
        got, _ = model(ids[:, :-1], None, targets=ids[:, 1:])
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(want.item(), rel=0.02)
    got.backward()
    assert model.decoder.tail[1][1].weight.grad.abs().sum() > 0


def test_decoding_on_cuda_matches_the_cpu():
    model = _model().eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    with torch.no_grad():
        want, _ = model(ids)  # (B, T, V) log-probs on the CPU
        model.cuda()
        got, state = model(ids.cuda())
        torch.testing.assert_close(got.cpu(), want, atol=2e-3, rtol=2e-3)  # TF32 matmuls
        step, _ = model.stepper(2)(ids[:, -1].cuda(), state)  # the stepper on CUDA
        again, _ = model(ids[:, -1:].cuda(), state)
        torch.testing.assert_close(step, again[:, 0], atol=2e-3, rtol=2e-3)
    texts = model.complete("w1 w2", n=2, max_new_tokens=16, seed=1)  # the CUDA graph decoder
    assert len(texts) == 2 and all(t.split() for t in texts)
