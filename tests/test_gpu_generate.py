"""Generation on CUDA: graph replays against the same ops run eagerly (run with -m gpu)."""

from __future__ import annotations

import warnings

import pytest
import torch

from lstmgen import GenerationConfig, LanguageModel, ModelConfig
from lstmgen.cudagraph import GraphDecoder
from lstmgen.decode import decode_block, model_step, prime
from lstmgen.generate import stream_text
from lstmgen.models.recurrent_steppers import TorchStepper
from lstmgen.sampling import uniforms
from lstmgen.tokenizers import CharTokenizer

pytestmark = pytest.mark.gpu

SAMPLERS = [
    {"temperature": 0},
    {"temperature": 1.0},
    {"temperature": 0.7, "top_k": 5},
    {"temperature": 1.2, "top_p": 0.85},
    {"temperature": 1.0, "top_k": 9, "top_p": 0.9, "repetition_penalty": 1.4},
]


@pytest.fixture(scope="module")
def cuda():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device("cuda")


def make_model(device, cell="lstm", dtype=torch.float32) -> LanguageModel:
    torch.manual_seed(0)
    tok = CharTokenizer.fit(["abcdefgh ijk\nlmnop"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, cell=cell, embedding_size=16, hidden_size=32)
    model = LanguageModel(cfg, tok)
    with torch.no_grad():  # sharpen the distribution so that samples differ visibly
        model.decoder.weight.mul_(20)
    return model.to(device=device, dtype=dtype).eval()


def texts(events, n: int) -> list[str]:
    out = [""] * n
    for ev in events:
        out[ev.index] += ev.text
    return out


@pytest.mark.parametrize("options", SAMPLERS)
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_graph_replays_give_the_eager_text(cuda, cell, options):
    model = make_model(cuda, cell, torch.float64)
    kw = {"max_new_tokens": 70, "seed": 3, **options}  # 70: the last block of 16 is partial
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failed capture warns and decodes eagerly
        graphed = texts(stream_text(model, ["abc"] * 5, **kw), 5)
    eager = texts(stream_text(model, ["abc"] * 5, cuda_graphs=False, **kw), 5)
    assert graphed == eager
    assert all(len(model.tokenizer.encode(t)) == 70 for t in graphed)
    if options["temperature"]:
        assert len(set(graphed)) > 1


def test_stop_strings_and_streaming_across_blocks(cuda):
    model = make_model(cuda)
    kw = {"max_new_tokens": 200, "seed": 1, "temperature": 1.0}
    full = model.complete("ab", **kw)[0]
    stop = full[37:39]  # somewhere inside the third block of 16
    cut = model.complete("ab", stop=[stop], **kw)[0]
    assert cut == full[: full.index(stop)]
    assert "".join(model.generate("ab", **kw)) == full


@pytest.mark.parametrize("options", SAMPLERS)
def test_complete_in_bulk_is_the_streamed_text_on_cuda(cuda, options):
    # complete decodes the text once per sample at the end (generate.complete_texts); the
    # blocks it keeps are copies, not the graph's token buffer that the next replay overwrites.
    model = make_model(cuda)
    kw = {"max_new_tokens": 70, "seed": 5, **options}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bulk = model.complete("abc", n=64, **kw)
    assert bulk == texts(stream_text(model, ["abc"] * 64, **kw), 64)
    assert bulk == model.complete("abc", n=64, cuda_graphs=False, **kw)
    assert all(len(model.tokenizer.encode(t)) == 70 for t in bulk)


@pytest.mark.parametrize("options", SAMPLERS)
def test_graph_of_the_fused_stepper_equals_eager_blocks(cuda, options):
    model = make_model(cuda)
    cfg = GenerationConfig(**options)
    tok = model.tokenizer
    ids = [[tok.bos_id, *tok.encode("abc")]] * 4
    with torch.inference_mode():
        logits, state = prime(model, ids)
        seen = torch.zeros(4, tok.vocab_size, dtype=torch.bool, device=cuda)
        step = TorchStepper(model)
        dec = GraphDecoder(step, cfg, logits, state, seen.clone(), block=8)
        g1 = torch.Generator(device=cuda).manual_seed(9)
        g2 = torch.Generator(device=cuda).manual_seed(9)
        got, want = [], []
        for _ in range(5):
            got.append(dec.run(g1).clone())
            u = uniforms((8, 4), g2, cuda)
            tokens, logits, state = decode_block(step, logits, state, u, cfg, seen)
            want.append(tokens)
    assert torch.equal(torch.cat(got, 1), torch.cat(want, 1))


def test_cuda_greedy_text_equals_cpu(cuda):
    cpu = make_model(torch.device("cpu"), dtype=torch.float64)
    gpu = make_model(cuda, dtype=torch.float64)
    kw = {"max_new_tokens": 60, "temperature": 0}
    assert gpu.complete("abc", n=2, **kw) == cpu.complete("abc", n=2, **kw)


def test_cudnn_step_inside_a_graph(cuda):
    # The default CUDA path captures nn.LSTM (cuDNN) itself; check it against eager stepping.
    model = make_model(cuda)
    cfg = GenerationConfig(temperature=1.0)
    with torch.inference_mode():
        logits, state = prime(model, [[1, 2, 3]] * 2)
        step = model_step(model)
        dec = GraphDecoder(step, cfg, logits, state, None, block=4)
        g1 = torch.Generator(device=cuda).manual_seed(4)
        g2 = torch.Generator(device=cuda).manual_seed(4)
        got = dec.run(g1).clone()
        want, _, _ = decode_block(step, logits, state, uniforms((4, 2), g2, cuda), cfg, None)
    assert torch.equal(got, want)
