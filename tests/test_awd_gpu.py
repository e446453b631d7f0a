"""Weight drop on CUDA (issue #16): cuDNN gets each layer's weights as one contiguous buffer, so
there is no "not part of a single contiguous chunk" warning, and gradients still reach the
plain weights. Run with ``pytest -m gpu`` on a machine with a GPU."""

import warnings

import pytest
import torch

from lstmgen import GenerationConfig, LanguageModel, ModelConfig
from lstmgen.tokenizers import CharTokenizer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_weight_drop_on_cudnn_without_the_compaction_warning(cell):
    tok = CharTokenizer.fit(["abcdefghijklmnopqrs\n"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, cell=cell, embedding_size=32, hidden_size=64,
                      num_layers=2, weight_drop=0.5, dropout_hidden=0.2)  # fmt: skip
    model = LanguageModel(cfg, tok, GenerationConfig()).cuda().train()
    ids = torch.randint(0, tok.vocab_size, (8, 40), device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the compaction warning would fail the test
        logits, _ = model(ids)
        logits.float().sum().backward()
    assert model.rnn.weight_hh_l1.grad is not None
    assert (model.rnn.weight_hh_l1.grad == 0).any()  # dropped connections get no gradient
    model.eval()
    cpu = LanguageModel(cfg, tok, GenerationConfig()).eval()
    cpu.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    with torch.no_grad():
        torch.testing.assert_close(model(ids)[0].cpu(), cpu(ids.cpu())[0], rtol=1e-3, atol=1e-3)
