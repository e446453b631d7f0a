"""Does decoding meet subnormal floats? (issue #12: training flushes them, generation does not.)

Training a sha-lstm on CPU produced enough subnormal floats (below 1.2e-38 in float32) to slow
it 3x, so training and evaluation run under ``runtime.flush_denormals``. This checks decoding:
for a model directory (or random weights of the cpu-small size, ``--random``), it decodes with
the flag off and on, interleaved in one process (so machine noise hits both), and counts the
subnormal numbers in the carried state (h, c, the attention memory) and the logits of every
step. A ratio near 1 and no subnormals: decoding does not need the flag.

    python benchmarks/decode_denormals.py --model runs/sha                 # a trained model
    python benchmarks/decode_denormals.py --random --arch sha-lstm --memory 1024
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # the LSTM's batch-1 NumPy step: no spinning

import torch  # noqa: E402
from common import write_result  # noqa: E402

from lstmgen import LanguageModel, ModelConfig  # noqa: E402
from lstmgen.tokenizers import CharTokenizer  # noqa: E402

TINY = torch.finfo(torch.float32).tiny  # the smallest normal float32


def subnormals(t: torch.Tensor) -> int:
    if not t.is_floating_point():
        return 0
    a = t.abs()
    return int(((a > 0) & (a < TINY)).sum())


def count(model: LanguageModel, batch: int, steps: int) -> dict[str, int]:
    """Subnormal numbers met in the state parts and the logits over ``steps`` steps."""
    step = model.stepper(batch)
    state = model.init_state(batch)
    ids = torch.zeros(batch, dtype=torch.long)
    found = {"logits": 0, "values": 0}
    g = torch.Generator().manual_seed(1)
    with torch.inference_mode():
        for _ in range(steps):
            logits, state = step(ids, state)
            found["logits"] += subnormals(logits)
            for i, part in enumerate(state):
                found[f"state_{i}"] = found.get(f"state_{i}", 0) + subnormals(part)
            found["values"] += logits.numel() + sum(p.numel() for p in state)
            ids = torch.multinomial(torch.softmax(logits / 0.8, -1), 1, generator=g)[:, 0]
    return found


def rate(model: LanguageModel, batch: int, steps: int) -> float:
    t0 = time.perf_counter()
    model.complete("", n=batch, max_new_tokens=steps, temperature=0.8, seed=1)
    return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", help="a model directory")
    ap.add_argument("--random", action="store_true", help="random weights of cpu-small's size")
    ap.add_argument("--arch", default="sha-lstm")
    ap.add_argument("--memory", type=int, default=512)
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--name", default="decode_denormals")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.model:
        model = LanguageModel.from_pretrained(args.model).eval()
        what = args.model
    elif args.random:
        torch.manual_seed(0)
        tok = CharTokenizer.fit(["".join(chr(c) for c in range(32, 96)) + "\n"])
        extra = {"arch": "sha-lstm", "memory": args.memory} if args.arch == "sha-lstm" else {}
        cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=64, hidden_size=384, **extra)
        model = LanguageModel(cfg, tok).eval()
        what = f"random weights, {args.arch}, 2x384" + (f", memory {args.memory}" * bool(extra))
    else:
        raise SystemExit("error: give --model DIR or --random")
    rows = []
    for batch in (int(b) for b in args.batches.split(",")):
        steps = max(10, args.steps // batch)
        found = count(model, batch, steps)
        rates: dict[bool, list[float]] = {False: [], True: []}
        rate(model, batch, 3)  # warm-up
        for _ in range(args.repeats):
            for flag in (False, True):
                torch.set_flush_denormal(flag)
                rates[flag].append(rate(model, batch, steps))
        torch.set_flush_denormal(False)
        off, on = statistics.median(rates[False]), statistics.median(rates[True])
        rows.append(
            {
                "batch": batch,
                "steps": steps,
                "subnormals": found,
                "tokens_per_s_off": round(off, 1),
                "tokens_per_s_flushed": round(on, 1),
                "flushed_vs_off": round(on / off, 3),
            }
        )
        print(f"batch {batch}: subnormals {found}; flushed {on / off:.2f}x ({off:.0f} -> {on:.0f})")
    out = write_result(
        args.name,
        {"model": what, "threads": args.threads, "repeats": args.repeats, "rows": rows},
    )
    print(f"-> {out}")


if __name__ == "__main__":
    main()
