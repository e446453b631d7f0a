"""Training throughput: lstmgen's Trainer against a raw PyTorch loop, same config, same process.

The raw loop is the minimal thing a person writes: embedding + ``nn.LSTM`` + linear + cross
entropy + AdamW over pre-made TBPTT windows held in memory (on the GPU for ``--device cuda``),
hidden state carried and detached; on CUDA with the same precision as lstmgen (bf16 autocast,
or fp32 with TF32) and fused AdamW. lstmgen's number is its whole step loop (its window source,
schedule, clipping, logging with one host sync every ``log_every`` steps), timed between its
progress callbacks after a warm-up. Both loops read the same windows in the same order and are
credited the same tokens. On CPU both loops live in one process and take turns in chunks of
``--steps`` steps, ``--repeats`` times in ABBA order (``interleaved_rates``); on CUDA each repeat
is a pair of separate runs, also in ABBA order. The figure is the median of the per-pair ratios,
so slow drifts of a shared machine cancel within a pair and alternate in sign.

Model FLOP utilisation: ``train_flops_per_token`` (analytic) times tokens/s, against a peak
measured in the same run (a large matmul in the config's precision).

    python benchmarks/train_throughput.py [--steps 5] [--repeats 24]     # CPU, 2 small configs
    python benchmarks/train_throughput.py --device cuda                  # issue 5's GPU configs
    python benchmarks/train_throughput.py --tiny                         # CPU smoke run, seconds

$LSTMGEN_DATA_DIR (or ``--data-root``) points at the corpora (default ../shared/data);
``--out-dir`` (or $LSTMGEN_RESULTS_DIR) says where the JSON goes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from common import SHARED_DATA, measured, write_result

from lstmgen import Callback, LstmgenError, ModelConfig, TrainConfig, Trainer
from lstmgen.corpus import Corpus, prepare_corpus
from lstmgen.data import batchify, get_window, num_windows
from lstmgen.model import LanguageModel
from lstmgen.runtime import fused_adamw, resolve_device, synchronize, tf32


@dataclass
class Bench:
    name: str
    corpus: str  # "shakespeare" (char) or "ptb" (word)
    model: dict[str, Any]
    batch: int
    seq_len: int
    precision: str = "fp32"  # bf16 | fp32 (bf16 becomes fp32 off CUDA)


CHAR_3x512 = {"num_layers": 3, "hidden_size": 512, "embedding_size": 128}
CHAR_3x1024 = {"num_layers": 3, "hidden_size": 1024, "embedding_size": 128}
WORD_2x4096 = {"num_layers": 2, "hidden_size": 4096, "embedding_size": 4096}
CONFIGS = {
    "cpu": [
        Bench("char 2x384 (CPU default)", "shakespeare", {"hidden_size": 384}, 16, 64),
        Bench("char 2x512", "shakespeare", {"hidden_size": 512, "embedding_size": 128}, 16, 64),
    ],
    # Issue 5's reference table (raw loop on an H200): 457k, 1.87M, 920k and 304k tokens/s.
    "cuda": [
        Bench("char 3x512", "shakespeare", CHAR_3x512, 64, 256, "bf16"),
        Bench("char 3x512", "shakespeare", CHAR_3x512, 256, 256, "bf16"),
        Bench("char 3x1024", "shakespeare", CHAR_3x1024, 128, 256, "fp32"),
        Bench("word 2x4096 (PTB)", "ptb", WORD_2x4096, 256, 64, "bf16"),
    ],
    # --tiny: the CUDA list's shapes scaled down, through the same code.
    "tiny": [
        Bench("char 2x32", "shakespeare", {"hidden_size": 32, "embedding_size": 16}, 8, 32, "bf16"),
        Bench("word 1x32 (PTB)", "ptb", {"num_layers": 1, "hidden_size": 32}, 8, 16, "fp32"),
    ],
}
CORPORA = {
    "shakespeare": ("tiny-shakespeare/train.txt", "char"),
    "ptb": ("ptb/ptb.train.txt", "word"),
}
TINY_CHARS = 30_000
GATES = {"lstm": 4, "gru": 3, "rnn": 1}


def train_flops_per_token(cfg: ModelConfig) -> float:
    """Analytic training FLOPs per token = 3 x forward, counting matmuls only::

        forward = 2 x (sum over layers l of G H (I_l + H)  +  H V)

    with G = 4 gates for an LSTM (3 GRU, 1 RNN), I_1 = E and I_l = H for l > 1 (each layer's
    input and recurrent weights), and H V the decoder; 2 FLOPs per multiply-add. Backward costs
    twice the forward (gradients for activations and for weights). Biases, gate nonlinearities,
    the embedding lookup and the softmax are left out."""
    G, E, H, L, V = (
        GATES[cfg.cell],
        cfg.embedding_size,
        cfg.hidden_size,
        cfg.num_layers,
        cfg.vocab_size,
    )
    macs = sum(G * H * ((E if layer == 0 else H) + H) for layer in range(L)) + H * V
    return 3 * 2 * macs


def matmul_peak(device: torch.device, precision: str, n: int, reps: int = 10) -> float:
    """FLOP/s of an n x n x n matmul in ``precision`` (bf16, or fp32 with TF32 on CUDA): the
    ceiling the model FLOP utilisation is measured against. CUDA events time it on a GPU."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    with tf32(device.type == "cuda" and precision == "fp32"):
        for _ in range(3):
            a @ b
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(reps):
                a @ b
            end.record()
            end.synchronize()
            seconds = start.elapsed_time(end) / 1000
        else:
            t0 = time.perf_counter()
            for _ in range(reps):
                a @ b
            seconds = time.perf_counter() - t0
    return 2 * n**3 * reps / seconds


def tokens_before(step: int, n: int, batch: int, seq_len: int) -> int:
    """Tokens read by the first ``step`` steps over (B, n) streams (see Trainer.tokens_seen)."""
    per_epoch, nw = n - 1, -(-(n - 1) // seq_len)
    return batch * ((step // nw) * per_epoch + min((step % nw) * seq_len, per_epoch))


class BenchTrainer(Trainer):
    """lstmgen's Trainer without evaluation or checkpoint writes: only the step loop runs."""

    def _eval_and_checkpoint(self, max_tokens: int) -> None:
        # As if evaluated: fit() would otherwise save the model at the end of every chunk (a run
        # that stopped before its first evaluation gets its latest weights), a checkpoint write.
        self.pos.best_step = self.pos.step

    def save_state(self) -> None:
        pass

    def plot(self) -> None:
        return None


class Clock(Callback):
    """(step, time) at each progress update from ``skip`` on: the loop has synced by then."""

    def __init__(self, skip: int):
        self.skip, self.marks = skip, []

    def on_log(self, trainer, metrics):
        if metrics["step"] >= self.skip:
            self.marks.append((metrics["step"], time.perf_counter()))


def lstmgen_rate(
    corpus: Corpus, bench: Bench, model_cfg: ModelConfig, train_cfg: TrainConfig, warm: int
) -> tuple[float, int]:
    """Tokens/s of lstmgen's step loop, and the model's parameter count."""
    with tempfile.TemporaryDirectory() as tmp:
        device = resolve_device(train_cfg.device)
        torch.manual_seed(0)
        with device:  # build the weights where they will live
            model = LanguageModel(model_cfg, corpus.tokenizer)
        clock = Clock(warm)
        trainer = BenchTrainer(model, train_cfg, corpus, tmp, callbacks=[clock])
        trainer.fit()
        n, parameters = trainer.streams.shape[1], model.num_parameters()
        del trainer, model
    (s0, t0), (s1, t1) = clock.marks[0], clock.marks[-1]
    tokens = tokens_before(s1, n, bench.batch, bench.seq_len) - tokens_before(
        s0, n, bench.batch, bench.seq_len
    )
    return tokens / (t1 - t0), parameters


def raw_steps(
    tokens: np.ndarray, model_cfg: ModelConfig, bench: Bench, precision: str, device: torch.device
) -> Iterator[None]:
    """The raw loop, one step per ``next()``, over the same windows in the same order as the
    Trainer reads them."""
    torch.manual_seed(0)
    V, E, H, L = (
        model_cfg.vocab_size,
        model_cfg.embedding_size,
        model_cfg.hidden_size,
        model_cfg.num_layers,
    )
    with device:
        emb = torch.nn.Embedding(V, E)
        rnn = torch.nn.LSTM(E, H, L, batch_first=True)
        head = torch.nn.Linear(H, V)
    params = [*emb.parameters(), *rnn.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-3, fused=fused_adamw(device))
    streams = batchify(tokens, bench.batch)  # (B, n)
    nw = num_windows(streams, bench.seq_len)
    on_device = torch.from_numpy(np.ascontiguousarray(streams, dtype=np.int64)).to(device)
    windows = [  # (B, T') inputs and targets, contiguous, on the device
        tuple(t.contiguous() for t in get_window(on_device, k, bench.seq_len)) for k in range(nw)
    ]
    autocast = precision == "bf16"
    state = None
    step = 0
    while True:
        if step % nw == 0:
            state = None
        x, y = windows[step % nw]  # (B, T') each
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            out, state = rnn(emb(x), state)
            loss = F.cross_entropy(head(out).float().reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        state = tuple(s.detach() for s in state)
        step += 1
        yield


def raw_rate(
    tokens: np.ndarray,
    model_cfg: ModelConfig,
    bench: Bench,
    precision: str,
    device: torch.device,
    steps: int,
    warm: int,
) -> float:
    """Tokens/s of the raw loop over ``steps`` steps after ``warm`` untimed ones."""
    n = batchify(tokens, bench.batch).shape[1]
    loop = raw_steps(tokens, model_cfg, bench, precision, device)
    with tf32(device.type == "cuda" and precision == "fp32"):
        for _ in range(warm):
            next(loop)
        synchronize(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            next(loop)
        synchronize(device)
    seconds = time.perf_counter() - t0
    counted = tokens_before(warm + steps, n, bench.batch, bench.seq_len) - tokens_before(
        warm, n, bench.batch, bench.seq_len
    )
    return counted / seconds


def interleaved_rates(
    corpus: Corpus,
    bench: Bench,
    model_cfg: ModelConfig,
    train_cfg: TrainConfig,
    tokens: np.ndarray,
    warm: int,
    steps: int,
    chunks: int,
) -> tuple[list[float], list[float], int]:
    """Both loops alive in one process, taking turns in chunks of ``steps`` steps (ABBA order),
    each chunk timed: lstmgen's whole loop is ``Trainer.fit`` resumed chunk by chunk (its
    ``max_steps`` raised each time). On a shared CPU this cancels the machine's drift, which
    separate runs seconds apart do not (fp32, CPU only). Returns per-chunk tokens/s of both."""
    n = batchify(tokens, bench.batch).shape[1]
    raw_loop = raw_steps(tokens, model_cfg, bench, "fp32", torch.device("cpu"))
    raw, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        model = LanguageModel(model_cfg, corpus.tokenizer)
        trainer = BenchTrainer(model, train_cfg.replace(max_steps=warm), corpus, tmp)
        trainer.fit()
        for _ in range(warm):
            next(raw_loop)
        raw_done = warm

        def run_ours() -> None:
            s0 = trainer.pos.step
            trainer.config = trainer.config.replace(max_steps=s0 + steps)
            t0 = time.perf_counter()
            trainer.fit()
            seconds = time.perf_counter() - t0
            got = tokens_before(trainer.pos.step, n, bench.batch, bench.seq_len)
            ours.append((got - tokens_before(s0, n, bench.batch, bench.seq_len)) / seconds)

        def run_raw() -> None:
            nonlocal raw_done
            t0 = time.perf_counter()
            for _ in range(steps):
                next(raw_loop)
            seconds = time.perf_counter() - t0
            got = tokens_before(raw_done + steps, n, bench.batch, bench.seq_len)
            raw.append((got - tokens_before(raw_done, n, bench.batch, bench.seq_len)) / seconds)
            raw_done += steps

        for i in range(chunks):
            for run in (run_raw, run_ours) if i % 2 == 0 else (run_ours, run_raw):
                run()
        parameters = model.num_parameters()
    return raw, ours, parameters


def adamw_step_ms(
    model_cfg: ModelConfig, device: torch.device, rounds: int = 6, steps: int = 20
) -> dict[str, float]:
    """Milliseconds per AdamW step over the model's parameters (random gradients): fused, as
    lstmgen (and the raw loop here) run it, and torch's default (foreach) implementation, taking
    turns ``rounds`` times in ABBA order. Medians, and the default's time over the fused one."""
    torch.manual_seed(0)
    model = LanguageModel(model_cfg).to(device)
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p)
    optimizers = {
        "fused": torch.optim.AdamW(params, lr=1e-3, fused=fused_adamw(device)),
        "default": torch.optim.AdamW(params, lr=1e-3),
    }
    times: dict[str, list[float]] = {k: [] for k in optimizers}
    for i in range(rounds + 1):
        for name in list(optimizers)[:: 1 if i % 2 else -1]:
            synchronize(device)
            t0 = time.perf_counter()
            for _ in range(steps):
                optimizers[name].step()
            synchronize(device)
            if i:  # the first round warms both up
                times[name].append((time.perf_counter() - t0) / steps * 1e3)
    fused, default = (statistics.median(times[k]) for k in ("fused", "default"))
    return {
        "fused": round(fused, 3),
        "default": round(default, 3),
        "speedup": round(default / fused, 2),
    }


def corpus_file(data_root: Path, kind: str, tiny: bool, tmp: Path) -> tuple[Path, str]:
    rel, tokenizer = CORPORA[kind]
    path = data_root / rel
    if tiny:  # the first characters, cut at a line end
        text = path.read_text(encoding="utf-8")[:TINY_CHARS]
        path = tmp / f"{kind}.txt"
        path.write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    return path, tokenizer


def run_config(
    bench: Bench, args: argparse.Namespace, device: torch.device, tmp: Path, peaks: dict
) -> dict[str, Any]:
    precision = bench.precision if device.type == "cuda" else "fp32"
    path, tokenizer = corpus_file(args.data_root, bench.corpus, args.tiny, tmp)
    log_every = 10 if device.type == "cuda" else 5
    warm = -(-args.warmup // log_every) * log_every  # the Clock needs marks at both ends
    steps = -(-args.steps // log_every) * log_every
    train_cfg = TrainConfig(
        tokenizer=tokenizer,
        batch_size=bench.batch,
        seq_len=bench.seq_len,
        max_steps=warm + steps,
        eval_every=10**9,
        sample_tokens=0,
        device=str(device),
        precision=precision,
        log_every=log_every,
    )
    corpus = prepare_corpus(tmp / bench.corpus, train_cfg, [path])
    model_cfg = ModelConfig(dropout=0.0, vocab_size=corpus.tokenizer.vocab_size, **bench.model)
    tokens = np.asarray(corpus.train.tokens, dtype=np.int64)
    raw, ours = [], []
    if device.type == "cpu" and not args.tiny:
        raw, ours, parameters = interleaved_rates(
            corpus, bench, model_cfg, train_cfg, tokens, warm, steps, args.repeats
        )
    for i in range(0 if raw else args.repeats):  # ABBA pairs: raw first, lstmgen first, ...
        if i % 2:
            rate, parameters = lstmgen_rate(corpus, bench, model_cfg, train_cfg, warm)
        raw.append(raw_rate(tokens, model_cfg, bench, precision, device, steps, warm))
        if not i % 2:
            rate, parameters = lstmgen_rate(corpus, bench, model_cfg, train_cfg, warm)
        ours.append(rate)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    r, o = statistics.median(raw), statistics.median(ours)
    # The ratio is the median of per-repeat ratios: each pair runs back to back, so the slow
    # drifts of a shared machine (here up to 15 % between minutes) cancel within a pair.
    pair_ratio = statistics.median(b / a for a, b in zip(raw, ours, strict=True))
    if precision not in peaks:
        peaks[precision] = matmul_peak(device, precision, args.peak_size)
    flops = train_flops_per_token(model_cfg)
    peak = peaks[precision]
    row = {
        "config": bench.name,
        "corpus": bench.corpus,
        "batch": bench.batch,
        "seq_len": bench.seq_len,
        "precision": precision,
        "parameters": parameters,
        "vocab_size": model_cfg.vocab_size,
        "raw_tokens_per_s": round(r),
        "lstmgen_tokens_per_s": round(o),
        "ratio": round(pair_ratio, 3),
        "ratio_of_medians": round(o / r, 3),
        "raw_runs": [round(v) for v in raw],
        "lstmgen_runs": [round(v) for v in ours],
        "train_flops_per_token": flops,
        "raw_tflops": round(flops * r / 1e12, 2),
        "lstmgen_tflops": round(flops * o / 1e12, 2),
        "peak_tflops": round(peak / 1e12, 1),
        "raw_mfu": round(flops * r / peak, 4),
        "lstmgen_mfu": round(flops * o / peak, 4),
        "adamw_step_ms": adamw_step_ms(model_cfg, device),
    }
    print(
        f"{bench.name}, batch {bench.batch}x{bench.seq_len} {precision}: raw {r:,.0f} tok/s, "
        f"lstmgen {o:,.0f} tok/s ({pair_ratio:.3f}x); {row['lstmgen_tflops']} TFLOP/s, "
        f"MFU {row['lstmgen_mfu']:.1%} of {row['peak_tflops']} measured",
        flush=True,
    )
    return row


def markdown(r: dict) -> str:
    """The README table for a result of this benchmark (benchmarks/render_readme.py can use it)."""
    rows = [
        "| config | precision | raw PyTorch loop | lstmgen Trainer | ratio | lstmgen TFLOP/s "
        "| MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        if "error" in row:
            rows.append(f"| {row['config']} | | failed: {row['error'][:80]} | | | | |")
            continue
        rows.append(
            f"| {row['config']}, batch {row['batch']}x{row['seq_len']} | {row['precision']} "
            f"| {row['raw_tokens_per_s']:,} tok/s | {row['lstmgen_tokens_per_s']:,} tok/s "
            f"| {row['ratio']:.3f}x | {row['lstmgen_tflops']:.1f} | {row['lstmgen_mfu']:.1%} |"
        )
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in r.get("peak_tflops", {}).items())
    note = (
        f"\n\nRatio: median over {r['repeats']} ABBA pairs of {r['steps']} steps after "
        f"{r['warmup']} warm-up steps. MFU: analytic training FLOPs per token (3 x forward "
        f"matmuls) x tokens/s over the matmul peak measured in the same run (TFLOP/s: "
        f"{peaks}); {measured(r)}."
    )
    return "\n".join(rows) + note + adamw_note(r)


def adamw_note(r: dict) -> str:
    """A sentence on the AdamW step both loops use (rows measured before it was added: none)."""
    steps = [
        f"{row['config']}: {row['adamw_step_ms']['fused']:.2f} vs "
        f"{row['adamw_step_ms']['default']:.2f} ms, {row['adamw_step_ms']['speedup']:.1f}x"
        for row in r["rows"]
        if "adamw_step_ms" in row
    ]
    if not steps:
        return ""
    return (
        " Both loops use fused AdamW (lstmgen's choice on CPU and CUDA); one fused step against "
        f"torch's default (foreach) AdamW, measured in the same run: {'; '.join(steps)}."
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny configs and corpora (CPU, seconds)")
    ap.add_argument(
        "--steps", type=int, help="timed steps per run or chunk [5 cpu, 30 cuda, 10 tiny]"
    )
    ap.add_argument("--warmup", type=int, help="untimed steps first [10, 5 tiny]")
    ap.add_argument("--repeats", type=int, help="pairs [24 cpu, 2 cuda and tiny]")
    ap.add_argument("--peak-size", type=int, help="n of the n^3 peak matmul [8192 cuda]")
    ap.add_argument("--name", help="[train_throughput_<device>, train_throughput_tiny]")
    ap.add_argument("--out-dir", help="where the JSON goes [$LSTMGEN_RESULTS_DIR or results/]")
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA)
    )
    args = ap.parse_args(argv)
    try:
        device = resolve_device(args.device)
    except LstmgenError as exc:
        raise SystemExit(f"error: {exc}") from None
    cuda = device.type == "cuda"
    # CPU: many short chunk pairs, so the shared machine's drift cancels within each pair
    args.steps = args.steps or (10 if args.tiny else 30 if cuda else 5)
    args.warmup = args.warmup or (5 if args.tiny else 10)
    args.repeats = args.repeats or (24 if device.type == "cpu" and not args.tiny else 2)
    args.peak_size = args.peak_size or (8192 if cuda and not args.tiny else 512)
    if args.out_dir:
        os.environ["LSTMGEN_RESULTS_DIR"] = args.out_dir
    configs = CONFIGS["tiny" if args.tiny else "cuda" if cuda else "cpu"]
    peaks: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    name = args.name or (
        "train_throughput_tiny" if args.tiny else f"train_throughput_{device.type}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for bench in configs:
            try:
                rows.append(run_config(bench, args, device, Path(tmp), peaks))
            except (RuntimeError, LstmgenError) as err:  # e.g. out of memory: keep the others
                print(f"{bench.name}: failed: {err}", flush=True)
                rows.append({"config": bench.name, "error": str(err)[:500]})
            if cuda:
                torch.cuda.empty_cache()
            out = write_result(  # after every config: a kill loses one row, not all
                name,
                {
                    "device": device.type,
                    "threads": torch.get_num_threads(),
                    "steps": args.steps,
                    "warmup": args.warmup,
                    "repeats": args.repeats,
                    "peak_tflops": {k: round(v / 1e12, 1) for k, v in peaks.items()},
                    "peak_matmul_n": args.peak_size,
                    "seconds": round(time.perf_counter() - t0, 1),
                    "rows": rows,
                },
            )
    print(out)
    if any("error" in row for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
