"""Fill the README's benchmark tables from benchmarks/results/*.json (the only source of figures).

Each table sits between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` markers; a table
whose result file is missing is left as it is.

    python benchmarks/render_readme.py
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from importlib import import_module

from common import RESULTS, ROOT, measured
from train_throughput import adamw_note


def quality_cpu(r: dict) -> str:
    m, t = r["model_config"], r["train_config"]
    ref = r["reference"]
    rows = [
        "| run | validation loss (nats/char) | training time |",
        "|---|---|---|",
        f"| lstmgen default (`{m['cell']}` {m['num_layers']}x{m['hidden_size']}, embedding "
        f"{m['embedding_size']}, batch {t['batch_size']}x{t['seq_len']}, lr {t['lr']}, "
        f"{r.get('precision', 'fp32')}, {r['parameters']:,} parameters, {r['steps']} steps, "
        f"{r['epochs']} epochs) "
        f"| **{r['val_loss_nats_per_char']:.4f}** | {r['train_seconds']:.0f} s |",
        f"| plain 2x256 LSTM (reference, same machine type) | {ref['plain 2x256 LSTM']} | 193 s |",
        f"| nanoGPT CPU recipe (reference, same machine type) | {ref['nanoGPT CPU recipe']} "
        "| 194 s |",
    ]
    mach = r["machine"]
    return "\n".join(rows) + (
        f"\n\nMeasured {r['date'][:10]} on {mach.get('cpu_model', mach['processor'])} "
        f"({mach['cpu_count']} cores), torch {mach['torch']}: `{r['command']}` "
        "(from `benchmarks/`). Every character of `val.txt` is scored once, statefully "
        "(16 contiguous streams, each warmed up on the 256 characters before it)."
    )


def load_server(r: dict) -> str:
    rows = [
        "| concurrent streaming clients | requests/s | tokens/s | p50 latency | p99 latency "
        "| errors | mean batch |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in r["phases"]:
        rows.append(
            f"| {p['clients']} | {p['requests_per_s']:.1f} | {p['tokens_per_s']:,.0f} "
            f"| {p['latency_p50_s']:.3f} s | {p['latency_p99_s']:.3f} s | {p['errors']} "
            f"| {p['mean_batch']:.1f} |"
        )
    mach = r["machine"]
    s = r["settings"]
    return "\n".join(rows) + (
        f"\n\n32 clients get **{r['tokens_per_s_ratio_32_vs_1']:.2f}x** the total tokens/s of one "
        f"client (the decode loop alone, without HTTP: {r['decode_loop_ratio_32_vs_1']:.1f}x). "
        f"{r['model']}, {s['seconds_per_phase']:.0f} s per phase, max_tokens {s['max_tokens']}; "
        f"measured {r['date'][:10]} on {mach.get('cpu_model', mach['processor'])} "
        f"({mach['cpu_count']} cores, shared), torch {mach['torch']}: `{r['command']}`."
    )


def train_throughput_cpu(r: dict) -> str:
    rows = [
        "| config | raw PyTorch loop | lstmgen Trainer | ratio: median of pairs | of medians "
        "| pair ratios seen |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        pairs = [o / a for a, o in zip(row["raw_runs"], row["lstmgen_runs"], strict=True)]
        rows.append(
            f"| {row['config']}, batch {row['batch']}x{row['seq_len']} "
            f"| {row['raw_tokens_per_s']:,} tok/s | {row['lstmgen_tokens_per_s']:,} tok/s "
            f"| {row['ratio']:.3f}x | {row.get('ratio_of_medians', row['ratio']):.3f}x "
            f"| {min(pairs):.2f}-{max(pairs):.2f} |"
        )
    return (
        "\n".join(rows)
        + (
            f"\n\nBoth loops in one process, taking turns in {r.get('repeats', 3)} chunks of "
            f"{r['steps']} steps each (ABBA order); ratio: median of the per-pair ratios. On this "
            f"shared machine single measurements drift by ~15 %; {measured(r)}. lstmgen's loop "
            "includes gradient clipping; the raw loop does not clip."
        )
        + adamw_note(r)
    )


def generation(r: dict) -> str:
    cuda = r.get("device", "cpu").startswith("cuda")
    head = "| batch | eager `nn.LSTM` stepping | lstmgen generator | ratio |"
    streamed = all("streamed_tokens_per_s" in row for row in r["rows"])
    if streamed:
        head += " streamed (`stream_text`) |"
    if cuda:
        head += " decode loop, cuDNN step graphed | decode loop, fused step graphed |"
    rows = [head, "|---" * (head.count("|") - 1) + "|"]
    for row in r["rows"]:
        eager = row.get("lstmgen_decoding", "cuda graph") != "cuda graph"
        line = (
            f"| {row['batch']} | {row['eager_tokens_per_s']:,.0f} tok/s "
            f"| {row['lstmgen_tokens_per_s']:,.0f} tok/s{' (capture failed: eager)' * eager} "
            f"| {row['speedup']:.2f}x |"
        )
        if streamed:
            line += f" {row['streamed_tokens_per_s']:,.0f} tok/s |"
        if cuda:
            for body in ("cudnn", "fused"):
                rate = row.get(f"graph_loop_{body}_tokens_per_s")
                line += f" {rate:,.0f} tok/s |" if rate is not None else " capture failed |"
        rows.append(line)
    captures = [row.get("graph_loop_cudnn_capture_ms") for row in r["rows"]]
    capture = (
        " Capturing the cuDNN step's block graph (its eager warm-up block included), which every"
        " `complete` call on CUDA does before its first token, took "
        + " / ".join(f"{c:.1f}" for c in captures)
        + " ms at batch "
        + " / ".join(str(row["batch"]) for row in r["rows"])
        + "."
        if cuda and captures and all(c is not None for c in captures)
        else ""
    )
    same = "identical" if r["greedy_text_identical"] else "DIFFERENT"
    where = "TF32 matmuls allowed" if cuda else f"{r['threads']} threads"
    return "\n".join(rows) + (
        f"\n\n{r['model']}, {where}, temperature 0.8; greedy text {same} on both "
        f"paths; median of interleaved repeats; {measured(r)}."
        + (
            " The generator is `model.complete` (text decoded once per sample at the end);"
            " streamed is `stream_text` read event by event (text decoded block by block)."
            if streamed
            else ""
        )
        + capture
    )


def quality_cpu_trials(r: dict) -> str:
    rows = [
        "| LSTM | batch | lr | steps in 190 s | tokens/s | validation loss (nats/char) |",
        "|---|---|---|---|---|---|",
    ]
    for t in r["trials"]:
        rows.append(
            f"| 2x{t['hidden_size']}, embedding {t['embedding_size']} | {t['batch']} | {t['lr']} "
            f"| {t['steps']:,} | {t['tokens_per_s']:,} | {t['val_loss_nats_per_char']:.4f} |"
        )
    return "\n".join(rows) + (
        "\n\nOne run each of `python quality_cpu.py key=value ...`; between runs of one setting "
        "the loss moves by about 0.01 and throughput by up to 15 % (a shared machine)."
    )


def _benchmark_markdown(module: str, fn: str = "markdown") -> Callable[[dict], str]:
    def render(r: dict) -> str:
        sys.path.insert(0, str(ROOT / "benchmarks"))
        return getattr(import_module(module), fn)(r)

    return render


RENDERERS: dict[str, Callable[[dict], str]] = {
    "train_throughput_cpu": train_throughput_cpu,
    "generation_cpu": generation,
    "generation_cuda": generation,
    "attention_cost_cpu": _benchmark_markdown("attention_cost"),
    "train_throughput_cuda": _benchmark_markdown("train_throughput"),
    "race_cuda": _benchmark_markdown("race"),
    "race_cuda_sha_lstm": _benchmark_markdown("race"),
    "attention_cost_cuda": _benchmark_markdown("attention_cost"),
    "quality_cpu": quality_cpu,
    "quality_cpu_trials": quality_cpu_trials,
    "load_server": load_server,
    "labels_steer": _benchmark_markdown("labels_steer"),
    "quantize_cpu": _benchmark_markdown("quantize"),
    "quality_cpu_attention": _benchmark_markdown("quality_cpu_attention"),
    "word_quality_cpu": _benchmark_markdown("word_quality"),
    "word_quality_gpu_ptb-lstmgen": _benchmark_markdown("word_quality"),
    "word_sweep_cpu": _benchmark_markdown("word_sweep"),
    # adaptive softmax (issue #16): tokens/s at WikiText-2's and PTB's V, then the sweep
    "word_sweep_throughput_adaptive_wt2": _benchmark_markdown("word_sweep"),
    "word_sweep_throughput_adaptive_ptb": _benchmark_markdown("word_sweep"),
    "word_sweep_adaptive_wt2": _benchmark_markdown("word_sweep"),
    "word_quality_cpu_adaptive_wt2": _benchmark_markdown("word_quality"),
    "word_quality_cpu_adaptive_ptb": _benchmark_markdown("word_quality"),
    "word_quality_cpu_adaptive_ptb_light": _benchmark_markdown("word_quality"),
    "word_quality_cpu_adaptive_ptb_e200_1k": _benchmark_markdown("word_quality"),
    # CPU bf16 (precision auto with bf16 instructions): per-token parity, the PTB and
    # WikiText-2 runs, speed
    "word_sweep_bf16_tokens_ptb": _benchmark_markdown("word_sweep"),
    "word_sweep_tied_tokens_ptb": _benchmark_markdown("word_sweep"),
    "word_quality_cpu_adaptive_ptb_bf16": _benchmark_markdown("word_quality"),
    "word_quality_cpu_adaptive_ptb_bf16_rerun": _benchmark_markdown("word_quality"),
    "word_quality_cpu_preset_wt2": _benchmark_markdown("word_quality"),
    "word_quality_cpu_preset_wt2_epyc": _benchmark_markdown("word_quality"),
    "word_sweep_bf16_reg_ptb": _benchmark_markdown("word_sweep"),
    "word_quality_cpu_preset_ptb": _benchmark_markdown("word_quality"),
    "word_quality_cpu_preset_ptb_epyc": _benchmark_markdown("word_quality"),
    "word_quality_cpu_bf16_h512_ptb": _benchmark_markdown("word_quality"),
    "word_sweep_h512_ptb_epyc": _benchmark_markdown("word_sweep"),
    "word_sweep_ntasgd_ptb": _benchmark_markdown("word_sweep"),
    "weight_drop_speed_cpu_amx": _benchmark_markdown("weight_drop_speed"),
    "weight_drop_speed_cpu_fp32": _benchmark_markdown("weight_drop_speed"),
    "weight_drop_speed_cpu_epyc_bf16": _benchmark_markdown("weight_drop_speed"),
    "word_quality_cpu_preset_ptb_curve": _benchmark_markdown("word_quality", "curve_markdown"),
    "word_quality_cpu_preset_ptb_epyc_curve": _benchmark_markdown("word_quality", "curve_markdown"),
    "cpu_bf16": _benchmark_markdown("cpu_bf16"),
    "cpu_bf16_epyc": _benchmark_markdown("cpu_bf16"),
    "quality_cpu_attention_sweep": _benchmark_markdown("quality_cpu_attention"),
    "quality_cpu_attention_600": _benchmark_markdown("quality_cpu_attention"),
    "attention_ablation": _benchmark_markdown("attention_ablation"),
    "long_context_cpu": _benchmark_markdown("long_context"),
}


# A block rendered from a result file of another name: the labels table shows the step-budgeted
# run made after the fix that lays documents out as generation starts them (labels_steer.json
# is the 300-s run from before it, kept for the record).
# The PTB preset runs' curves (issue #16's "report the curve") come from their result files too.
RESULT_FILES = {
    "labels_steer": "labels_steer_steps2500_h256",
    "word_quality_cpu_preset_ptb_curve": "word_quality_cpu_preset_ptb",
    "word_quality_cpu_preset_ptb_epyc_curve": "word_quality_cpu_preset_ptb_epyc",
}


def main() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    for name, render in RENDERERS.items():
        path = RESULTS / f"{RESULT_FILES.get(name, name)}.json"
        if not path.exists():
            continue
        block = render(json.loads(path.read_text()))
        pattern = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
        text, n = pattern.subn(lambda m, b=block: m.group(1) + b + "\n" + m.group(2), text)
        if not n:
            print(f"README has no <!-- bench:{name} --> block")
    readme.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
