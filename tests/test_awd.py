"""AWD-LSTM's regularisers (issue #16): weight drop, locked and embedding dropout, AR/TAR."""

import pytest
import torch

from lstmgen import ConfigError, GenerationConfig, LanguageModel, ModelConfig
from lstmgen.models import awd
from lstmgen.tokenizers import CharTokenizer

CELLS = ["lstm", "gru", "rnn"]


def make_model(cell="lstm", seed=0, **awd_options) -> LanguageModel:
    tok = CharTokenizer.fit(["abcdefghijklmnopqrs\n"])
    cfg = ModelConfig(
        vocab_size=tok.vocab_size,
        cell=cell,
        embedding_size=8,
        hidden_size=12,
        num_layers=2,
        **awd_options,
    )
    torch.manual_seed(seed)
    return LanguageModel(cfg, tok, GenerationConfig(temperature=0.5))


def test_locked_dropout_mask_is_shared_over_time():
    torch.manual_seed(0)
    x = torch.ones(4, 9, 16)  # (B, T, D)
    y = awd.locked_dropout(x, 0.5)
    assert torch.equal(y, y[:, :1].expand_as(y))  # one mask per sequence, every step the same
    assert set(y.unique().tolist()) == {0.0, 2.0}  # kept entries scaled by 1 / (1 - p)
    assert not torch.equal(y[0], y[1])  # but a different one per sequence


def test_embedding_dropout_drops_whole_words():
    torch.manual_seed(0)
    weight = torch.randn(10, 6)  # (V, E)
    ids = torch.tensor([[1, 2, 1, 3, 2, 1]] * 3)
    out = awd.embedding_dropout(weight, ids, 0.5)
    for word in (1, 2, 3):
        rows = out[ids == word]  # every occurrence of a word: dropped together or kept together
        assert torch.equal(rows, rows[:1].expand_as(rows))
        assert torch.allclose(rows[0], torch.zeros(6)) or torch.allclose(rows[0], 2 * weight[word])


def test_embedding_dropout_matches_masking_the_matrix_first():
    """Masking the looked-up rows is AWD-LSTM's embedded dropout (mask the (V, E) matrix, then
    look up): the same mask gives the same output and the same gradient."""
    weight = torch.randn(10, 6, dtype=torch.float64, requires_grad=True)
    ids = torch.tensor([[1, 2, 1, 3], [2, 9, 1, 0]])
    torch.manual_seed(3)
    out = awd.embedding_dropout(weight, ids, 0.4)
    (grad,) = torch.autograd.grad((out * out.detach().cos()).sum(), weight)
    torch.manual_seed(3)  # the same (V, 1) mask, applied the old way
    mask = torch.empty(10, 1, dtype=torch.float64).bernoulli_(0.6) / 0.6
    ref = torch.nn.functional.embedding(ids, weight * mask)
    (ref_grad,) = torch.autograd.grad((ref * ref.detach().cos()).sum(), weight)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    torch.testing.assert_close(grad, ref_grad)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_dropconnect_on_cpu_drops_p_and_keeps_the_expected_weight(p):
    torch.manual_seed(0)
    w = torch.full((401, 399), 3.0)  # 159,999 entries: not a multiple of four
    out = awd.dropconnect(w, p)
    assert out.shape == w.shape
    dropped = (out == 0).double().mean().item()
    assert abs(dropped - p) < 0.005  # 159,999 draws: the standard error is at most 0.00125
    kept = out[out != 0]
    assert torch.allclose(kept, torch.full_like(kept, 3.0 / (1 - round(p * 65536) / 65536)))
    assert abs(out.mean().item() - 3.0) < 0.1  # 1 / (1 - p) keeps the expectation (4 sigma)
    torch.manual_seed(0)
    assert torch.equal(awd.dropconnect(w, p), out)  # the seed decides the mask
    assert not torch.equal(awd.dropconnect(w, p), out)  # and each call draws a fresh one


@pytest.mark.parametrize("option", ["dropout_input", "dropout_hidden"])  # one call, per layer
@pytest.mark.parametrize("cell", CELLS)
def test_regularised_forward_computes_the_plain_network(cell, option):
    """Both regularised paths (all layers in one functional call; layer by layer) compute the
    same network as nn.LSTM: checked with a dropout so small that nothing is dropped."""
    plain = make_model(cell).double().train()
    model = make_model(cell, **{option: 1e-12}).double().train()  # the awd path, no-op masks
    model.load_state_dict(plain.state_dict())
    ids = torch.randint(0, plain.config.vocab_size, (3, 11))
    state = plain.init_state(3)
    a, sa = plain(ids, state)
    b, sb = model(ids, state)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    for x, y in zip(sa, sb, strict=True):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-10)


@pytest.mark.parametrize("cell", CELLS)
def test_weight_drop_changes_training_outputs_but_not_eval(cell):
    plain = make_model(cell)
    model = make_model(cell, weight_drop=0.5)
    model.load_state_dict(plain.state_dict())
    ids = torch.randint(0, plain.config.vocab_size, (2, 7))
    model.train()
    torch.manual_seed(1)
    t1, _ = model(ids)
    t2, _ = model(ids)
    assert not torch.allclose(t1, t2)  # a fresh mask per forward pass
    plain.eval(), model.eval()
    torch.testing.assert_close(model(ids)[0], plain(ids)[0], rtol=0, atol=0)


def test_weight_drop_masks_weight_hh_only_and_gradients_reach_it():
    model = make_model(weight_drop=0.9).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 5))
    logits, _ = model(ids)
    logits.sum().backward()
    grad = model.rnn.weight_hh_l0.grad
    assert grad is not None and grad.abs().sum() > 0
    # with p 0.9 most entries of weight_hh get no gradient (they were dropped) ...
    assert (grad == 0).float().mean() > 0.5
    # ... but the input weights are not dropped
    assert (model.rnn.weight_ih_l0.grad == 0).float().mean() < 0.5


def test_weight_dropped_model_generates_as_its_plain_weights():
    """Generation (the fused steppers read rnn.weight_*) uses the weights as they are."""
    plain = make_model()
    model = make_model(weight_drop=0.5, dropout_input=0.3, dropout_hidden=0.3,
                       dropout_output=0.3, dropout_embedding=0.1)  # fmt: skip
    model.load_state_dict(plain.state_dict())
    model.train()
    model(torch.randint(0, 20, (2, 5)))  # a training forward leaves no trace on the weights
    model.eval()
    a = "".join(plain.generate("abc", max_new_tokens=30, seed=3))
    b = "".join(model.generate("abc", max_new_tokens=30, seed=3))
    assert a == b


def test_activations_are_the_last_layer_before_and_after_dropout():
    model = make_model(dropout_output=0.5).train()
    ids = torch.randint(0, model.config.vocab_size, (2, 6))
    acts: list[torch.Tensor] = []
    logits, _ = model(ids, None, acts)
    raw, dropped = acts
    assert raw.shape == dropped.shape == (2, 6, 12)
    mask = dropped / raw  # (B, T, H): 0 or 2, the same at every step
    torch.testing.assert_close(mask, mask[:, :1].expand_as(mask))
    torch.testing.assert_close(logits, model.decoder(dropped))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"weight_drop": 1.0}, "weight_drop must be in [0, 1)"),
        ({"dropout_input": -0.1}, "dropout_input must be in [0, 1)"),
        ({"dropout_embedding": float("nan")}, "dropout_embedding must be a finite number"),
        ({"dropout_hidden": float("inf")}, "dropout_hidden must be a finite number"),
        ({"weight_drop": 0.5, "arch": "sha-lstm"}, "option of the recurrent architecture"),
    ],
)
def test_bad_model_options_are_one_error(options, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace(")", r"\)")):
        ModelConfig.from_dict({"vocab_size": 10, **options})


def test_old_config_without_the_new_fields_loads():
    cfg = ModelConfig.from_dict({"vocab_size": 10, "hidden_size": 8})
    assert (cfg.weight_drop, cfg.dropout_input, cfg.dropout_embedding) == (0.0, 0.0, 0.0)
