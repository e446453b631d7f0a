"""Training speed with weight drop (DropConnect on weight_hh, issue #16) on against off.

Two measurements, each in one process with the variants taking turns in chunks of ``--steps``
training steps (ABAB... order, ``--repeats`` rounds), so a shared machine's drift cancels:

1. ``trainer``: lstmgen's ``Trainer.train_step`` (forward, backward, clipping, AdamW) on PTB
   windows, for the same model with ``weight_drop`` 0.5 and 0 (everything else equal). Two
   pairs: the plain model (weight drop is the only regulariser: the layer-by-layer path against
   the fused ``nn.LSTM``), and the ``word-cpu`` preset's model (both on the layer-by-layer path).
   The floor is a ratio >= 0.9.
2. ``implementations``: one forward + backward of a 2-layer LSTM by the ways weight drop can be
   written, to pick the CPU one: the fused ``nn.LSTM`` without weight drop (reference),
   ``torch._VF.lstm`` on all layers' weight tensors in one call (lstmgen's CPU path) or per
   layer (its path with ``dropout_hidden``), per layer on one concatenated buffer (cuDNN's
   layout, lstmgen's CUDA path), and
   ``torch.func.functional_call`` of the ``nn.LSTM`` with the dropped matrices swapped in.

    python benchmarks/weight_drop_speed.py                 # PTB, the word-cpu model's size
    python benchmarks/weight_drop_speed.py --tiny          # seconds: a smoke run
    python benchmarks/weight_drop_speed.py --precision fp32  # the trainer pairs in fp32

$LSTMGEN_DATA_DIR (or ``--data-root``) points at the corpora (default ../shared/data).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from common import SHARED_DATA, write_result

from lstmgen import ModelConfig, TrainConfig, Trainer
from lstmgen.config import PRESETS
from lstmgen.models.awd import _layer_weights, _one_buffer


def interleave(
    fns: dict[str, Callable[[], int]], repeats: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Each fn runs a chunk and returns tokens processed; in turns. Per-chunk tokens per
    wall-clock second, and per CPU second of this process (``time.process_time``: on a machine
    shared with other jobs it counts the work done, not the waiting for a core)."""
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(repeats):
        order = list(fns) if r % 2 == 0 else list(reversed(fns))
        for name in order:
            t0, c0 = time.perf_counter(), time.process_time()
            tokens = fns[name]()
            wall[name].append(tokens / (time.perf_counter() - t0))
            cpu[name].append(tokens / max(time.process_time() - c0, 1e-9))
    return wall, cpu


def trainer_chunk(trainer: Trainer, steps: int) -> Callable[[], int]:
    trainer.model.train()

    def run() -> int:
        tokens = 0
        for _ in range(steps):
            k = trainer.pos.window % trainer.windows_per_epoch
            x, y, trainer.lr_scale = trainer.window(k)
            trainer.train_step(x, y)
            trainer.pos.window, trainer.pos.step = k + 1, trainer.pos.step + 1
            tokens += x.numel()
        return tokens

    return run


def trainer_pairs(args: argparse.Namespace, tmp: Path) -> list[dict]:
    ptb = args.data_root / "ptb"
    word = PRESETS["word-cpu"]
    size = {k: word["model"][k] for k in ("embedding_size", "hidden_size", "num_layers")}
    if args.tiny:
        size = {"embedding_size": 16, "hidden_size": 32, "num_layers": 2}
    pairs = {
        "plain model, weight drop 0.5 vs none (fused nn.LSTM)": {**size, "tie_weights": True},
        "word-cpu model, weight drop 0.5 vs 0": {**word["model"], **size},
    }
    train = TrainConfig(
        tokenizer="word",
        batch_size=8 if args.tiny else word["train"]["batch_size"],
        seq_len=16 if args.tiny else word["train"]["seq_len"],
        grad_clip=0.25,
        max_steps=1,
        sample_tokens=0,
        device="cpu",
        precision=args.precision,
    )
    out = []
    for i, (name, model) in enumerate(pairs.items()):
        trainers = {}
        for label, wd in (("weight_drop", 0.5), ("no_weight_drop", 0.0)):
            cfg = ModelConfig.from_dict({**model, "weight_drop": wd})
            torch.manual_seed(0)
            trainers[label] = Trainer.create(
                tmp / f"{i}{label}", [ptb / "ptb.train.txt"], train, cfg,
                valid=[ptb / "ptb.valid.txt"],
            )  # fmt: skip
            trainers[label].lock.release()
        for t in trainers.values():  # warm-up
            trainer_chunk(t, 2)()
        rates, cpu = interleave({k: trainer_chunk(t, args.steps) for k, t in trainers.items()},
                                args.repeats)  # fmt: skip
        on = statistics.median(rates["weight_drop"])
        off = statistics.median(rates["no_weight_drop"])
        ratios = [a / b for a, b in zip(rates["weight_drop"], rates["no_weight_drop"], strict=True)]
        cpu_ratios = [a / b for a, b in zip(cpu["weight_drop"], cpu["no_weight_drop"], strict=True)]
        out.append({
            "pair": name,
            "model_config": trainers["weight_drop"].model.config.to_dict(),
            "batch": train.batch_size,
            "seq_len": train.seq_len,
            "precision": trainers["weight_drop"].precision,
            "tokens_per_s_weight_drop": round(on),
            "tokens_per_s_no_weight_drop": round(off),
            "ratio_median_of_rounds": round(statistics.median(ratios), 3),
            "ratio_min": round(min(ratios), 3),
            "tokens_per_cpu_s_weight_drop": round(statistics.median(cpu["weight_drop"])),
            "tokens_per_cpu_s_no_weight_drop": round(statistics.median(cpu["no_weight_drop"])),
            "cpu_time_ratio_median": round(statistics.median(cpu_ratios), 3),
            "floor": 0.9,
            "rounds": len(ratios),
        })  # fmt: skip
        print(f"{name}: {round(on):,} vs {round(off):,} tokens/s; CPU-time ratio "
              f"{statistics.median(cpu_ratios):.3f}", flush=True)  # fmt: skip
    return out


def implementations(args: argparse.Namespace) -> list[dict]:
    E, H, B, T = (16, 32, 8, 16) if args.tiny else (400, 400, 32, 35)
    torch.manual_seed(0)
    rnn = torch.nn.LSTM(E, H, num_layers=2, batch_first=True)
    x = torch.randn(B, T, E)
    p = 0.5

    def plain() -> None:
        out, _ = rnn(x)
        out.sum().backward()

    def per_layer(cuda_layout: bool) -> Callable[[], None]:
        def run() -> None:
            h = x
            for k in range(2):
                w = _layer_weights(rnn, k, p)
                w = _one_buffer(w) if cuda_layout else w
                h0 = h.new_zeros(1, B, H)
                h, _, _ = torch._VF.lstm(h, (h0, h0), w, True, 1, 0.0, True, False, True)
            h.sum().backward()

        return run

    def one_call() -> None:
        w = [t for k in range(2) for t in _layer_weights(rnn, k, p)]
        h0 = x.new_zeros(2, B, H)
        h, _, _ = torch._VF.lstm(x, (h0, h0), w, True, 2, 0.0, True, False, True)
        h.sum().backward()

    names = [f"weight_hh_l{k}" for k in range(2)]

    def functional() -> None:
        swapped = {n: F.dropout(getattr(rnn, n), p, training=True) for n in names}
        out, _ = torch.func.functional_call(rnn, swapped, (x,))
        out.sum().backward()

    fns = {
        "nn.LSTM fused, no weight drop (reference)": plain,
        "_VF.lstm, all layers in one call (lstmgen CPU, no dropout_hidden)": one_call,
        "_VF.lstm per layer, weight list (lstmgen CPU with dropout_hidden)": per_layer(False),
        "_VF.lstm per layer, one buffer (lstmgen CUDA layout)": per_layer(True),
        "functional_call(nn.LSTM), dropped weight_hh": functional,
    }

    def chunk(fn: Callable[[], None]) -> Callable[[], int]:
        def run() -> int:
            for _ in range(args.steps):
                fn()
                rnn.zero_grad(set_to_none=True)
            return args.steps * B * T

        return run

    for fn in fns.values():
        fn()
    rates, cpu = interleave({k: chunk(f) for k, f in fns.items()}, args.repeats)
    ref = statistics.median(rates[next(iter(fns))])
    cpu_ref = statistics.median(cpu[next(iter(fns))])
    return [
        {"implementation": k, "tokens_per_s": round(statistics.median(v)),
         "vs_reference": round(statistics.median(v) / ref, 3),
         "tokens_per_cpu_s": round(statistics.median(cpu[k])),
         "vs_reference_cpu_time": round(statistics.median(cpu[k]) / cpu_ref, 3),
         "shape": f"2x{H}, E {E}, {B}x{T}"}
        for k, v in rates.items()
    ]  # fmt: skip


def markdown(r: dict) -> str:
    """The README's table: each trainer pair's tokens/s with weight drop over without it."""
    from common import measured

    rows = [
        "| model | precision | tokens/s, weight drop 0.5 | tokens/s, none | ratio (median of "
        "rounds) | CPU-time ratio | floor 0.9x |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in r["trainer"]:
        met = "met" if p["ratio_median_of_rounds"] >= p["floor"] else "not met"
        rows.append(
            f"| {p['pair']} | {p.get('precision', '')} | {p['tokens_per_s_weight_drop']:,} | "
            f"{p['tokens_per_s_no_weight_drop']:,} | **{p['ratio_median_of_rounds']}** | "
            f"{p['cpu_time_ratio_median']} | {met} |"
        )
    tail = (
        f"{r['trainer'][0]['batch']}x{r['trainer'][0]['seq_len']} windows of PTB, chunks of "
        f"{r['steps_per_chunk']} steps taking turns; {measured(r)} (from `benchmarks/`)."
    )
    return "\n".join(rows) + "\n\n" + tail


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=5, help="steps per chunk")
    ap.add_argument("--repeats", type=int, default=10, help="rounds of chunks")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes: a smoke run")
    ap.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="the trainer pairs' (auto: bf16 on a CPU with bf16 instructions, as lstmgen train)",
    )
    ap.add_argument("--data-root", type=Path,
                    default=Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA))  # fmt: skip
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    if args.tiny:
        args.steps, args.repeats = min(args.steps, 2), min(args.repeats, 2)
    with tempfile.TemporaryDirectory() as tmp:
        pairs = trainer_pairs(args, Path(tmp))
    impls = implementations(args)
    for row in pairs:
        print(f"{row['pair']}: {row['tokens_per_s_weight_drop']:,} vs "
              f"{row['tokens_per_s_no_weight_drop']:,} tokens/s, ratio "
              f"{row['ratio_median_of_rounds']} (floor 0.9)")  # fmt: skip
    for row in impls:
        print(f"{row['implementation']}: {row['tokens_per_s']:,} tokens/s "
              f"({row['vs_reference']}x; CPU time {row['vs_reference_cpu_time']}x)")  # fmt: skip
    write_result(
        args.name or ("weight_drop_speed_tiny" if args.tiny else "weight_drop_speed_cpu"),
        {
            "trainer": pairs,
            "implementations": impls,
            "steps_per_chunk": args.steps,
            "notes": "Chunks interleaved ABAB in one process; wall-clock tokens/s on a shared "
            "machine drift, so the ratios (median of rounds) and the CPU-time figures (tokens "
            "per CPU-second of this process) are the comparison, not the absolute rates.",
        },
    )


if __name__ == "__main__":
    main()
