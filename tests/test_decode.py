"""decode.py (priming + block decoding) and textstream.TextStream are the one implementation of
each: the generator, the CUDA graph and the server's batcher go through them (issue #11)."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from lstmgen import GenerationConfig, LanguageModel, ModelConfig
from lstmgen.decode import EagerDecoder, Step, decode_block, model_step, prime
from lstmgen.models.recurrent_steppers import NUMPY_BELOW
from lstmgen.sampling import uniforms
from lstmgen.textstream import TextStream, TextStreams
from lstmgen.tokenizers import CharTokenizer

SRC = Path(__file__).resolve().parents[1] / "src" / "lstmgen"


def make_model() -> LanguageModel:
    torch.manual_seed(0)
    tok = CharTokenizer.fit(["abcdefgh ijk\n"])
    cfg = ModelConfig(
        vocab_size=tok.vocab_size, embedding_size=8, hidden_size=8, num_layers=2, dropout=0.0
    )
    model = LanguageModel(cfg, tok).double().eval()
    with torch.no_grad():  # sharpen the distribution so samples differ visibly
        model.decoder.weight.mul_(30)
    return model


def files_matching(pattern: str) -> list[str]:
    """Files of src/lstmgen (the NumPy reference aside: it is the separate, teaching copy)
    whose code matches ``pattern``."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if not rel.startswith("reference/") and re.search(pattern, path.read_text()):
            found.append(rel)
    return found


def test_one_copy_of_stop_hold_back_and_of_the_decode_loop():
    # The batcher used to search stop strings and hold text back itself, pick stepper or
    # forward itself and mark seen tokens itself.
    assert files_matching(r"StopMatcher\(|(matcher|stops)\.held\b") == ["textstream.py"]
    assert files_matching(r"\.stream_decoder\((?!\))") == ["textstream.py"]
    assert files_matching(r"\.batch_below\b") == [
        "decode.py",
        "models/attention_stepper.py",
        "models/recurrent_steppers.py",
    ]
    assert files_matching(r"rnn_kernels\(|PRIME_CHUNK\]") == ["decode.py", "runtime.py"]
    assert files_matching(r"next_token\(") == ["decode.py", "sampling.py"]


def test_eager_decoder_runs_decode_block_block_after_block():
    model = make_model()
    cfg = GenerationConfig(temperature=1.0, repetition_penalty=1.3)
    tok = model.tokenizer
    with torch.inference_mode():
        logits, state = prime(model, [[tok.bos_id, *tok.encode("abc")]] * 3)
        seen = torch.zeros(3, tok.vocab_size, dtype=torch.bool)
        dec = EagerDecoder(Step(model, 3), cfg, logits, state, seen.clone(), block=4)
        g1, g2 = torch.Generator().manual_seed(2), torch.Generator().manual_seed(2)
        got = torch.cat([dec.run(g1) for _ in range(3)], 1)  # (3, 12)
        step = model_step(model)
        want = []
        for _ in range(3):
            u = uniforms((4, 3), g2, logits.device)
            tokens, logits, state = decode_block(step, logits, state, u, cfg, seen)
            want.append(tokens)
    assert torch.equal(got, torch.cat(want, 1)) and len(set(got[0].tolist())) > 1


def test_step_uses_the_stepper_below_its_batch_and_forward_above():
    model = make_model()
    step = Step(model, 1)
    calls = []
    handle = model.register_forward_pre_hook(lambda m, args: calls.append(args[0].shape[0]))
    with torch.inference_mode():
        for B in (1, NUMPY_BELOW):
            ids = torch.arange(B) % model.config.vocab_size  # (B,)
            state = model.init_state(B)
            got, _ = step(ids, state)  # (B, V)
            want, _ = model(ids[:, None], state)  # (B, 1, V)
            assert torch.allclose(got, want[:, -1], atol=1e-9)
    handle.remove()
    assert calls == [1, NUMPY_BELOW, NUMPY_BELOW]  # Step ran forward only for the large batch


def test_text_stream_is_the_text_of_text_streams():
    tok = CharTokenizer.fit(["abc\n"])
    ids = tok.encode("ab\nab\nc\n\nabc")
    one = TextStream(tok, ["\n\n"])
    pieces = []
    for t in ids:  # callers stop pushing once a stream is done
        if not one.done:
            pieces.append(one.push([t], last=False))
    streams = TextStreams(tok, 1, ["\n\n"])
    events = [list(streams.push([t], last=False)) for t in ids]
    assert [p for p in pieces if p] == [(e[0].text, e[0].finish_reason) for e in events if e]
    assert "".join(p[0] for p in pieces if p) == "ab\nab\nc" and one.done
