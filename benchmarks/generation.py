"""Generation speed: lstmgen's generator against eager ``nn.LSTM`` stepping, on CPU or CUDA.

Same model (char vocabulary 65, 3x512 LSTM, embedding 128, random weights: speed does not
depend on training), same process, interleaved repeats. The baseline is the obvious loop a
user writes: ``logits, state = model(x, state)`` one token at a time with PyTorch's default
kernels (oneDNN on CPU, cuDNN on CUDA), then softmax + ``torch.multinomial`` (which on CUDA
checks its input with host syncs on every call: part of what the obvious loop costs).
lstmgen's number is ``model.complete`` end to end: priming, sampling at temperature 0.8, text
decoding and, on CUDA, capturing the CUDA graph (all included in its time). "streamed" is the
same through ``stream_text`` read event by event (``generate``, the CLI), whose text is decoded
block by block where ``complete`` decodes each sample's ids once at the end. Greedy decoding is
checked to give the same text on both paths.

On CUDA two more rows per batch size time the decode loop alone (the graph replays and the
token copies, after capture): once with nn.LSTM (cuDNN) captured, which ``complete`` uses, and
once with lstmgen's fused stepper captured. TF32 matmuls are allowed on CUDA (recorded).

    python benchmarks/generation.py                    # CPU, result generation_cpu.json
    python benchmarks/generation.py --device cuda      # result generation_cuda.json
    python benchmarks/generation.py --tiny             # seconds, for testing this script
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
from common import write_result

from lstmgen import GenerationConfig, LanguageModel, ModelConfig
from lstmgen.tokenizers import CharTokenizer

STEPS = {  # tokens generated per sequence, by device and batch size
    "cpu": {1: 300, 64: 100, 1024: 20},
    "cuda": {1: 2000, 64: 1000, 1024: 500},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.inference_mode()
def eager_tokens_per_s(model: LanguageModel, batch: int, steps: int, seed: int) -> float:
    dev = model.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    x = torch.full((batch, 1), model.tokenizer.bos_id, dtype=torch.long, device=dev)
    sync(dev)
    t0 = time.perf_counter()
    logits, state = model(x)
    for _ in range(steps):
        probs = torch.softmax(logits[:, -1] / 0.8, dim=-1)
        x = torch.multinomial(probs, 1, generator=gen)  # (B, 1)
        logits, state = model(x, state)
    x.cpu()  # the tokens reach the host (as a user's loop must, eventually)
    return batch * steps / (time.perf_counter() - t0)


def lstmgen_tokens_per_s(
    model: LanguageModel, batch: int, steps: int, seed: int
) -> tuple[float, str | None]:
    """Tokens/s of ``model.complete``, and the warning it gave if a CUDA graph capture failed
    (it then decoded eagerly: the figure is not the graph's)."""
    sync(model.device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        model.complete("", n=batch, max_new_tokens=steps, temperature=0.8, seed=seed)
        rate = batch * steps / (time.perf_counter() - t0)
    failed = [str(w.message) for w in caught if "capture failed" in str(w.message)]
    return rate, failed[0] if failed else None


def streamed_tokens_per_s(model: LanguageModel, batch: int, steps: int, seed: int) -> float:
    """Tokens/s of ``stream_text`` read event by event (what ``generate`` and the CLI stream):
    its text is decoded block by block, where ``complete`` decodes each sample once at the end;
    the difference is the per-block text work."""
    from lstmgen.generate import stream_text

    sync(model.device)
    t0 = time.perf_counter()
    for _ in stream_text(model, [""] * batch, max_new_tokens=steps, temperature=0.8, seed=seed):
        pass
    return batch * steps / (time.perf_counter() - t0)


@torch.inference_mode()
def graph_loop_tokens_per_s(
    model: LanguageModel, batch: int, steps: int, fused: bool
) -> tuple[float, float]:
    """The decode loop alone on CUDA: replays + one token copy per block, capture excluded;
    and the seconds the capture itself took (its eager warm-up block included), the fixed cost
    every ``complete`` call on CUDA pays before its first token."""
    from lstmgen.cudagraph import GraphDecoder
    from lstmgen.decode import BLOCK, model_step, prime
    from lstmgen.models.recurrent_steppers import TorchStepper

    dev, K = model.device, BLOCK["cuda"]
    logits, state = prime(model, [[model.tokenizer.bos_id]] * batch)
    step = TorchStepper(model) if fused else model_step(model)
    sync(dev)
    t0 = time.perf_counter()
    dec = GraphDecoder(step, GenerationConfig(temperature=0.8), logits, state, None, block=K)
    sync(dev)
    capture = time.perf_counter() - t0
    gen = torch.Generator(device=dev).manual_seed(0)
    dec.run(gen).tolist()
    blocks = max(1, steps // K)
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(blocks):
        dec.run(gen).tolist()
    return batch * blocks * K / (time.perf_counter() - t0), capture


def greedy_identical(model: LanguageModel) -> bool:
    tok = model.tokenizer
    greedy = model.complete("ROMEO", max_new_tokens=50, temperature=0)[0]
    ids = torch.tensor([[tok.bos_id, *tok.encode("ROMEO")]], device=model.device)
    with torch.inference_mode():
        logits, state = model(ids)
        out = []
        for _ in range(50):
            nxt = logits[:, -1].argmax(-1, keepdim=True)
            out.append(nxt.item())
            logits, state = model(nxt, state)
    return tok.decode(out) == greedy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads")
    ap.add_argument("--batches", default="1,64,1024")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--tiny", action="store_true", help="a small model and few steps (testing)")
    ap.add_argument("--name", default=None, help="result name (default generation_<device>)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    torch.manual_seed(0)
    tok = CharTokenizer.fit(["".join(chr(c) for c in range(32, 96)) + "\n"])
    H, L, E = (32, 2, 16) if args.tiny else (512, 3, 128)
    cfg = ModelConfig(vocab_size=tok.vocab_size, embedding_size=E, hidden_size=H, num_layers=L)
    model = LanguageModel(cfg, tok).to(device).eval()
    same_text = greedy_identical(model)

    rows: list[dict] = []
    payload = {
        "device": str(device),
        "model": f"char LSTM {L}x{H}, embedding {E}, vocab 65, random weights",
        "parameters": model.num_parameters(),
        "greedy_text_identical": same_text,
        "rows": rows,
    }
    if device.type == "cpu":
        payload["threads"] = args.threads
    else:
        payload["tf32"] = True
    name = args.name or f"generation_{device.type}"
    for batch in (int(b) for b in args.batches.split(",")):
        steps = STEPS[device.type].get(batch, 20)
        if args.tiny:
            steps = min(steps, 40)
        eager, ours, streamed, fallback = [], [], [], None
        for r in range(args.repeats):  # interleaved so that machine noise hits all alike
            eager.append(eager_tokens_per_s(model, batch, steps, seed=r))
            rate, failed = lstmgen_tokens_per_s(model, batch, steps, seed=r)
            ours.append(rate)
            streamed.append(streamed_tokens_per_s(model, batch, steps, seed=r))
            fallback = fallback or failed
        e, o, st = statistics.median(eager), statistics.median(ours), statistics.median(streamed)
        row = {
            "batch": batch,
            "steps": steps,
            "eager_tokens_per_s": round(e, 1),
            "lstmgen_tokens_per_s": round(o, 1),
            "speedup": round(o / e, 2),
            "streamed_tokens_per_s": round(st, 1),
            "eager_runs": [round(v, 1) for v in eager],
            "lstmgen_runs": [round(v, 1) for v in ours],
            "streamed_runs": [round(v, 1) for v in streamed],
        }
        line = (
            f"batch {batch}: eager {e:,.0f} tok/s, lstmgen {o:,.0f} tok/s ({o / e:.2f}x), "
            f"streamed {st:,.0f} tok/s"
        )
        if device.type == "cuda":
            row["lstmgen_decoding"] = f"eager: {fallback}" if fallback else "cuda graph"
            for fused in (False, True):
                key = "graph_loop_fused_tokens_per_s" if fused else "graph_loop_cudnn_tokens_per_s"
                try:
                    runs = [graph_loop_tokens_per_s(model, batch, steps, fused) for _ in range(3)]
                except RuntimeError as err:  # recorded; the other rows still count
                    row[key.replace("tokens_per_s", "error")] = str(err)[:500]
                    line += f", loop {'fused' if fused else 'cudnn'} failed: {err}"
                    continue
                rate = statistics.median(r for r, _ in runs)
                capture_ms = 1000 * statistics.median(c for _, c in runs)
                row[key] = round(rate, 1)
                row[key.replace("tokens_per_s", "capture_ms")] = round(capture_ms, 2)
                line += f", loop {'fused' if fused else 'cudnn'} {rate:,.0f}"
                line += f" (capture {capture_ms:.1f} ms)"
        rows.append(row)
        print(line, flush=True)
        out_path = write_result(name, payload)  # after every batch size: a kill loses one row
    print(f"greedy text identical: {same_text} -> {out_path}")


if __name__ == "__main__":
    main()
