"""Generation speed on CPU: lstmgen's generator against eager ``nn.LSTM`` stepping.

Same model (char vocabulary 65, 3x512 LSTM, embedding 128, random weights: speed does not
depend on training), same process, interleaved repeats. The baseline is the obvious loop a user
writes: ``logits, state = model(x, state)`` one token at a time with PyTorch's default CPU
kernels, then softmax + ``torch.multinomial``. lstmgen's ``stream_text`` does the same work
(priming once, one step per token, temperature sampling) but steps on PyTorch's native RNN
kernel, which avoids oneDNN's per-call setup. Both produce the same text for the same seed
(checked here with greedy decoding).

    python benchmarks/generation_cpu.py [--threads 2] [--batches 1,64,1024]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from common import write_result

from lstmgen import LanguageModel, ModelConfig
from lstmgen.tokenizers import CharTokenizer


@torch.inference_mode()
def eager_tokens_per_s(model: LanguageModel, batch: int, steps: int, seed: int) -> float:
    gen = torch.Generator().manual_seed(seed)
    x = torch.full((batch, 1), model.tokenizer.bos_id, dtype=torch.long)
    t0 = time.perf_counter()
    logits, state = model(x)
    for _ in range(steps):
        probs = torch.softmax(logits[:, -1] / 0.8, dim=-1)
        x = torch.multinomial(probs, 1, generator=gen)  # (B, 1)
        logits, state = model(x, state)
    return batch * steps / (time.perf_counter() - t0)


def lstmgen_tokens_per_s(model: LanguageModel, batch: int, steps: int, seed: int) -> float:
    t0 = time.perf_counter()
    model.complete("", n=batch, max_new_tokens=steps, temperature=0.8, seed=seed)
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", default="1,64,1024")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="generation_cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = CharTokenizer.fit(["".join(chr(c) for c in range(32, 96)) + "\n"])
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=128, hidden_size=512, num_layers=3)
    model = LanguageModel(cfg, tok).eval()

    greedy = model.complete("ROMEO", max_new_tokens=50, temperature=0)[0]
    ids = torch.tensor([[tok.bos_id, *tok.encode("ROMEO")]])
    with torch.inference_mode():
        logits, state = model(ids)
        out = []
        for _ in range(50):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt.item())
            logits, state = model(nxt, state)
    same_text = tok.decode(out) == greedy

    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        steps = {1: 300, 64: 100}.get(batch, 20)
        eager, ours = [], []
        for r in range(args.repeats):  # interleaved so that machine noise hits both alike
            eager.append(eager_tokens_per_s(model, batch, steps, seed=r))
            ours.append(lstmgen_tokens_per_s(model, batch, steps, seed=r))
        e, o = statistics.median(eager), statistics.median(ours)
        rows.append(
            {
                "batch": batch,
                "steps": steps,
                "eager_tokens_per_s": round(e, 1),
                "lstmgen_tokens_per_s": round(o, 1),
                "speedup": round(o / e, 2),
                "eager_runs": [round(v, 1) for v in eager],
                "lstmgen_runs": [round(v, 1) for v in ours],
            }
        )
        print(f"batch {batch}: eager {e:,.0f} tok/s, lstmgen {o:,.0f} tok/s ({o / e:.2f}x)")
    out_path = write_result(
        args.name,
        {
            "model": "char LSTM 3x512, embedding 128, vocab 65, random weights",
            "parameters": model.num_parameters(),
            "threads": args.threads,
            "greedy_text_identical": same_text,
            "rows": rows,
        },
    )
    print(f"greedy text identical: {same_text} -> {out_path}")


if __name__ == "__main__":
    main()
