"""What the attention head costs at generation time (issue #12, "Cost").

Generation tokens/s at batch 1 and 64 of the sha-lstm (models/attention.py) with memories of
256, 1,024 and 4,096 tokens, against the plain LSTM of the same size ("memory 0") in the same
run: same E/H/L (the cpu-small preset's 2x384, embedding 64), char vocabulary 65, random
weights (speed does not depend on training), ``model.complete`` end to end (priming, sampling at
temperature 0.8, text decoding), repeats interleaved so that machine noise hits every row alike.

A decoding step of the sha-lstm on CPU up to 64 sequences is the written-out stepper
(models/attention_stepper.py; above, ``forward`` on one token: its memory is the key/value
cache). The head attends over all M slots with a mask, so a step costs the same whether the
memory is full or not: a short run measures the cost of a full memory. Per step and sequence
it reads the M x H memory; the stepper writes one slot of it (its sliding buffer), ``forward``
a shifted copy of all of it.

    python benchmarks/attention_cost.py                  # result attention_cost_cpu.json
    python benchmarks/attention_cost.py --device cuda    # attention_cost_cuda.json
    (gpu_suite.sh runs it on CUDA with --memories 0,256,4096 --repeats 2, to fit its time limit)
    python benchmarks/attention_cost.py --tiny           # seconds, for testing this script
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# NumPy's OpenBLAS (the LSTM's fused batch-1 step runs on it) gets as many threads as torch,
# set before numpy is imported: left at its default it spins on every core and slows the LSTM
# rows several-fold on a busy machine (benchmarks/server_fairness.py does the same).
_threads = sys.argv[sys.argv.index("--threads") + 1] if "--threads" in sys.argv[:-1] else "2"
os.environ.setdefault("OPENBLAS_NUM_THREADS", _threads)

import torch  # noqa: E402
from common import measured, write_result  # noqa: E402

from lstmgen import LanguageModel, ModelConfig  # noqa: E402
from lstmgen.tokenizers import CharTokenizer  # noqa: E402

STEPS = {"cpu": {1: 200, 64: 30}, "cuda": {1: 500, 64: 500}}  # tokens per sequence


def tokens_per_s(model: LanguageModel, batch: int, steps: int) -> float:
    if model.device.type == "cuda":
        torch.cuda.synchronize(model.device)
    t0 = time.perf_counter()
    model.complete("", n=batch, max_new_tokens=steps, temperature=0.8, seed=1)
    return batch * steps / (time.perf_counter() - t0)


def markdown(r: dict) -> str:
    """The README table of a result (benchmarks/render_readme.py)."""
    batches = sorted({row["batch"] for row in r["rows"]})
    rows = [
        "| memory (tokens) | " + " | ".join(f"batch {b}" for b in batches) + " |",
        "|---|" + "---|" * len(batches),
    ]
    for M in sorted({row["memory"] for row in r["rows"]}):
        cells = []
        for b in batches:
            row = next(x for x in r["rows"] if x["batch"] == b and x["memory"] == M)
            ratio = f" ({row['vs_lstm']:.2f}x)" if M and "vs_lstm" in row else ""
            cells.append(f"{row['tokens_per_s']:,.0f} tok/s{ratio}")
        rows.append(f"| {M or '0 (plain LSTM)'} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + (
        f"\n\n{r['model']}, {r.get('threads')} thread(s), temperature 0.8, median of "
        f"{r['repeats']} interleaved repeats; {measured(r)}."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--memories", default="0,256,1024,4096", help="0 = the plain LSTM")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="a small model and few steps (testing)")
    ap.add_argument("--name", default=None, help="result name (default attention_cost_<device>)")
    ap.add_argument("--notes", default="", help="recorded with the result")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    tok = CharTokenizer.fit(["".join(chr(c) for c in range(32, 96)) + "\n"])
    E, H, L = (16, 32, 2) if args.tiny else (64, 384, 2)
    memories = [int(m) for m in args.memories.split(",")]
    batches = [int(b) for b in args.batches.split(",")]
    models = {}
    for M in memories:
        torch.manual_seed(0)
        extra = {"arch": "sha-lstm", "memory": M} if M else {}
        cfg = ModelConfig(
            vocab_size=tok.vocab_size, embedding_size=E, hidden_size=H, num_layers=L, **extra
        )
        models[M] = LanguageModel(cfg, tok).to(device).eval()
    rows: list[dict] = []
    payload = {
        "device": str(device),
        "model": f"char {L}x{H}, embedding {E}, vocab {tok.vocab_size}, random weights",
        "threads": args.threads if device.type == "cpu" else None,
        "openblas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "repeats": args.repeats,
        "rows": rows,
        "notes": args.notes,
    }
    name = args.name or f"attention_cost_{device.type}"
    for batch in batches:
        steps = STEPS[device.type].get(batch, 20)
        steps = min(steps, 10) if args.tiny else steps
        rates: dict[int, list[float]] = {M: [] for M in memories}
        for M in memories:  # warm-up: first calls allocate and pick kernels
            tokens_per_s(models[M], batch, 2)
        for _ in range(args.repeats):
            for M in memories:
                rates[M].append(tokens_per_s(models[M], batch, steps))
        base = statistics.median(rates[memories[0]]) if memories[0] == 0 else None
        for M in memories:
            med = statistics.median(rates[M])
            row = {
                "batch": batch,
                "memory": M,
                "arch": "sha-lstm" if M else "recurrent",
                "tokens_per_s": round(med, 1),
                "all": [round(r, 1) for r in rates[M]],
                "steps": steps,
                "memory_mib_per_sequence": round(M * H * 4 / 2**20, 3),
                "parameters": models[M].num_parameters(),
            }
            if base:
                row["vs_lstm"] = round(med / base, 3)
            rows.append(row)
            print(
                f"batch {batch:3d} memory {M:5d}: {med:9.1f} tokens/s"
                + (f"  ({row['vs_lstm']:.2f}x the LSTM)" if base else ""),
                flush=True,
            )
        out = write_result(name, payload)  # after every batch size: a kill loses one batch
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
