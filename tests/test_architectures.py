"""Architectures behind one interface (issue #11): the registry, decoding through ``forward``
for an architecture without a stepper, and the ``State`` operations every consumer uses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from lstmgen import LanguageModel, ModelConfig
from lstmgen.decode import Step
from lstmgen.errors import CheckpointError, ConfigError
from lstmgen.models import registry
from lstmgen.state import State
from lstmgen.tokenizers import CharTokenizer

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0_1"


class ToyState(State):
    """``(h, memory)``, each (B, H): batch first, unlike the recurrent stack's (L, B, H)."""

    batch_dims = (0, 0)


class Toy:
    """A one-layer recurrence with a running memory of the inputs, and no stepper."""

    name = "toy"
    has_stepper = False

    def weight_shapes(self, config):
        V, H = config.vocab_size, config.hidden_size
        return {
            "embedding.weight": (V, H),
            "mix.weight": (H, 2 * H),
            "mix.bias": (H,),
            "decoder.weight": (V, H),
            "decoder.bias": (V,),
        }

    def check_weight_header(self, shapes, config):
        return None

    def build(self, model):
        V, H = model.config.vocab_size, model.config.hidden_size
        model.embedding = nn.Embedding(V, H)
        model.mix = nn.Linear(2 * H, H)
        model.decoder = nn.Linear(H, V)
        self.reset_parameters(model)

    def reset_parameters(self, model):
        for p in model.parameters():
            nn.init.normal_(p, std=0.8)  # large: greedy text that varies

    def init_state(self, model, batch_size):
        h = torch.zeros(batch_size, model.config.hidden_size)  # (B, H)
        return ToyState((h, h.clone()))

    def forward(self, model, ids, state):
        self.calls += 1
        h, memory = state if state is not None else self.init_state(model, ids.shape[0])
        outs = []
        for t in range(ids.shape[1]):
            x = model.embedding(ids[:, t])  # (B, H)
            memory = 0.5 * memory + x
            h = torch.tanh(model.mix(torch.cat([x, h + memory], dim=1)))  # (B, H)
            outs.append(h)
        return model.decoder(torch.stack(outs, dim=1)), ToyState((h, memory))  # (B, T, V)

    def stepper(self, model, batch_size):
        raise AssertionError("an architecture without a stepper is never asked for one")

    any_stepper = stepper


@pytest.fixture
def toy(monkeypatch):
    arch = Toy()
    arch.calls = 0
    monkeypatch.setitem(registry.ARCHITECTURES, "toy", arch)  # registered for this test only
    torch.manual_seed(0)
    tok = CharTokenizer.fit(["abcdefgh \n"])
    cfg = ModelConfig(arch="toy", vocab_size=tok.vocab_size, hidden_size=8)
    return LanguageModel(cfg, tok).eval()


def test_an_architecture_without_a_stepper_decodes_through_forward(toy):
    tok, arch = toy.tokenizer, toy.arch
    assert toy.fast_stepper(1) is None and Step(toy, 1).stepper is None
    text = toy.complete("ab", max_new_tokens=20, temperature=0)[0]
    assert arch.calls == 1 + 19  # the prompt once, then one call per token (none after the last)

    ids = torch.tensor([[tok.bos_id, *tok.encode("ab")]])
    with torch.no_grad():
        logits, state = toy(ids)  # by hand: forward, one token at a time, with the state
        out = []
        for _ in range(20):
            nxt = logits[:, -1].argmax(-1)  # (1,)
            out.append(nxt.item())
            logits, state = toy(nxt[:, None], state)
    assert text == tok.decode(out) and len(set(text)) > 2
    # several sequences: the batch joins and selects the toy's batch-first state
    assert toy.complete("ab", n=3, max_new_tokens=20, temperature=0) == [text] * 3


def test_a_model_directory_of_another_architecture_round_trips(toy, tmp_path):
    toy.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text(encoding="utf-8"))
    assert saved["arch"] == "toy"
    back = LanguageModel.from_pretrained(tmp_path / "m")
    assert back.state_dict().keys() == toy.state_dict().keys()
    assert back.complete("ab", max_new_tokens=10, temperature=0) == toy.complete(
        "ab", max_new_tokens=10, temperature=0
    )


def test_an_unknown_arch_is_one_clear_error(tmp_path):
    known = "recurrent, sha-lstm"
    with pytest.raises(ConfigError, match=rf"^arch must be one of {known}, got 'mamba'$"):
        LanguageModel(ModelConfig(arch="mamba", vocab_size=5))
    LanguageModel.from_pretrained(FIXTURES / "model_word_gru").save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "arch": "mamba"}))
    with pytest.raises(CheckpointError) as err:
        LanguageModel.from_pretrained(tmp_path / "m")
    assert str(err.value) == f"{config}: arch must be one of {known}, got 'mamba'"


def test_a_config_without_arch_is_the_recurrent_stack():
    saved = json.loads((FIXTURES / "model_word_gru" / "config.json").read_text(encoding="utf-8"))
    assert "arch" not in saved  # written before architectures had names
    model = LanguageModel.from_pretrained(FIXTURES / "model_word_gru")
    assert model.config.arch == "recurrent" and model.fast_stepper(1) is not None


def test_state_operations_follow_each_parts_batch_dimension():
    a = ToyState((torch.arange(6.0).view(2, 3), torch.zeros(2, 1)))  # B=2, batch first
    b = State((torch.ones(4, 1, 3), torch.zeros(4, 1, 3)))  # B=1, batch on dim 1 (L, B, H)
    both = ToyState.cat([a, a])
    assert type(both) is ToyState and both.batch_size == 4 and both[0].shape == (4, 3)
    picked = both.select(torch.tensor([3, 0]))
    assert torch.equal(picked[0], torch.stack([a[0][1], a[0][0]]))
    assert State.cat([b, b]).select(torch.tensor([1]))[0].shape == (4, 1, 3)
    buf = a.clone()
    assert buf[0].data_ptr() != a[0].data_ptr()
    ptr = buf[0].data_ptr()
    buf.copy_(picked)  # values in, addresses kept (the CUDA graph's buffers)
    assert buf[0].data_ptr() == ptr and torch.equal(buf[0], picked[0])
    grad = a.to(dtype=torch.float64)[0].requires_grad_()
    assert not ToyState((grad * 2, a[1])).detach()[0].requires_grad
    named = b.tensors()
    assert list(named) == ["hidden.0", "hidden.1"]  # the trainer state's names
    back = State.from_tensors({**named, "model.x": torch.zeros(1)})
    assert all(torch.equal(x, y) for x, y in zip(back, b, strict=True))
    assert State.from_tensors({"model.x": torch.zeros(1)}) is None
    assert State.of(torch.zeros(1, 1, 2))[0].shape == (1, 1, 2)  # a bare h, as before
