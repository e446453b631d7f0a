"""The word-cpu preset sweep (issue #16): candidate variants of ``--preset word-cpu`` trained on
Penn Treebank for a shorter wall-clock budget, side by side in pairs (``common.side_by_side``:
one core and one torch thread each, at the same time), each recording validation perplexity
against training seconds and, after the budget, one stateful pass over the whole validation
split with its best model (batch 10, as word_quality.py's test). The lowest full-validation
perplexity wins (never the test split: word_quality.py reports that), and its preset dict is
printed and stored (``winner_preset``) for config.py's ``PRESETS["word-cpu"]``.

    python benchmarks/word_sweep.py                 # 6 candidates x 240 s, ~15 min wall on 2 cores
    python benchmarks/word_sweep.py --throughput    # tokens/s of each candidate / word-cpu's
    python benchmarks/word_sweep.py --tokens 60000  # validation ppl after a fixed token count
    python benchmarks/word_sweep.py --budget 20 --eval-tokens 2000 --valid-tokens 2000 \\
        --only word-cpu e200-h400 --name word_sweep_smoke                         # smoke
    python benchmarks/word_sweep.py --corpus wikitext-2 --only word-cpu-lr5e-3 word-cpu-as \\
        h650-as word-cpu-as-2k --name word_sweep_adaptive_wt2   # adaptive softmax, ~9 min

Why these candidates (reasoning that does not depend on the machine's load): at V = 10,000
the decoder (H or E x V per token, forward and backward) is most of word-cpu's arithmetic, and
one core trains it for about one PTB epoch in 20 minutes, so the run underfits: what matters is
perplexity per CPU second, not capacity. ``--throughput`` measures the speed ratios of the
sizes (one process, candidates interleaved, so load hits all alike); ``--tokens`` measures
what a candidate learns per token (a step budget, independent of load). The sweep itself is
time-budgeted and belongs on a quiet machine. A 240-s sweep favours fast learners; the curves
show whether a candidate was still improving faster than the others when its budget ended.
"""

from __future__ import annotations

import argparse
import math
import os
import pprint
import tempfile
import time
from pathlib import Path
from typing import Any

import word_baseline
from common import SHARED_DATA, side_by_side, side_by_side_note, write_result
from word_quality import corpus_paths, lstmgen_side, prepare_run, train_config

from lstmgen import ModelConfig
from lstmgen.config import PRESETS

BASE = "word-cpu"  # the preset the candidates vary, and the reference candidate's name
# What every candidate overrides: --preset word-cpu as it stood during the sweeps (tied full
# softmax), frozen here so that each candidate's name keeps meaning what was measured. The
# preset itself is now the winner (config.py: untied, adaptive_cutoffs "auto", precision auto).
SWEEP_BASE: dict[str, dict[str, Any]] = {
    "model": {
        "embedding_size": 400,
        "hidden_size": 400,
        "num_layers": 2,
        "dropout": 0.0,
        "tie_weights": True,
        "weight_drop": 0.2,
        "dropout_input": 0.2,
        "dropout_hidden": 0.1,
        "dropout_output": 0.3,
        "dropout_embedding": 0.05,
    },
    "train": {
        "tokenizer": "word",
        "batch_size": 32,
        "seq_len": 35,
        "lr": 5e-3,
        "warmup_steps": 100,
        "grad_clip": 0.25,
        "ar": 2.0,
        "tar": 1.0,
        "variable_seq_len": True,
        "max_time": 1200.0,
        "eval_every": 500,
        "eval_tokens": 20000,
        "log_every": 20,
    },
}
# word-cpu-as-ptb's decoder: untied adaptive softmax with two tails within PTB's V = 10,000
AS_PTB: dict[str, Any] = {"tie_weights": False, "adaptive_cutoffs": [2000, 5000]}
# name -> (model overrides, train overrides, why); each on top of SWEEP_BASE
CANDIDATES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    # lr is pinned where the sweep ran at the preset's lr of the time (3e-3), so that each name
    # stays the setting word_sweep_cpu.json measured now that the preset is the winner's (5e-3)
    "word-cpu": (
        {},
        {"lr": 3e-3},
        "the preset before the sweep: 2x400, E 400 tied, light AWD regularisation, lr 3e-3",
    ),
    "e200-h400": (
        {"embedding_size": 200},
        {"lr": 3e-3},
        "E 200 with a 400 -> 200 projection before the tied decoder: the decoder's cost halves",
    ),
    "e200-h400-light": (
        {
            "embedding_size": 200,
            "weight_drop": 0.1,
            "dropout_input": 0.1,
            "dropout_hidden": 0.05,
            "dropout_output": 0.15,
            "dropout_embedding": 0.0,
        },
        {"lr": 3e-3},
        "e200-h400 with half the dropouts: about one epoch underfits before it overfits",
    ),
    "e200-h400-b64": (
        {"embedding_size": 200},
        {"batch_size": 64, "lr": 4e-3},
        "e200-h400 at batch 64, lr x1.33: larger matmuls for BLAS (measured: no gain)",
    ),
    "e128-h400": (
        {"embedding_size": 128},
        {"lr": 3e-3},
        "E 128 with a 400 -> 128 projection: the decoder at a third of word-cpu's cost",
    ),
    "e200-h400-lr5e-3": (
        {"embedding_size": 200},
        {"lr": 5e-3},
        "both levers measured to help: e200-h400's speed and the higher lr's progress per token",
    ),
    "e256-h256": (
        {"embedding_size": 256, "hidden_size": 256},
        {"lr": 3e-3},
        "smaller and faster: more tokens in the budget",
    ),
    "word-cpu-lr5e-3": (
        {},
        {"lr": 5e-3},
        "the preset at a higher AdamW lr (the sweep's winner: the preset since)",
    ),
    # Adaptive softmax (models/adaptive.py): untied, since it refuses tying. The word tokenizer
    # numbers words by frequency: on WikiText-2's training split ids below 2,000 are 77.3 % of
    # the tokens, below 10,000 92.9 % (PTB: 86.9 % below 2,000). Cutoffs must be below V, so
    # [2000, 10000] is for WikiText-2 (V = 33,278); the -2k candidate fits PTB (V = 10,000) too.
    "word-cpu-as": (
        {"tie_weights": False, "adaptive_cutoffs": [2000, 10000]},
        {"lr": 5e-3},
        "today's word-cpu untied, adaptive softmax 2000,10000 (WikiText-2 only)",
    ),
    "word-cpu-as-2k": (
        {"tie_weights": False, "adaptive_cutoffs": [2000]},
        {"lr": 5e-3},
        "today's word-cpu untied, adaptive softmax 2000 (one tail: fits PTB too)",
    ),
    "word-cpu-as-ptb": (
        AS_PTB,
        {"lr": 5e-3},
        "today's word-cpu untied, adaptive softmax 2000,5000 (two tails within PTB's V)",
    ),
    "word-cpu-as-ptb-light": (
        {
            **AS_PTB,
            "weight_drop": 0.1,
            "dropout_input": 0.1,
            "dropout_hidden": 0.05,
            "dropout_output": 0.15,
            "dropout_embedding": 0.0,
        },
        {"lr": 5e-3},
        "word-cpu-as-ptb with half the regularisation: at 20 min on one core PTB sees ~6 "
        "epochs, and the validation curve was still falling (underfitting, not overfitting)",
    ),
    "word-cpu-as-ptb-lr8e-3": (
        AS_PTB,
        {"lr": 8e-3},
        "word-cpu-as-ptb at AdamW lr 8e-3 (5e-3 beat 3e-3 by 10 % at 240 s)",
    ),
    "word-cpu-as-ptb-heavy": (
        {
            **AS_PTB,
            "weight_drop": 0.3,
            "dropout_input": 0.3,
            "dropout_hidden": 0.15,
            "dropout_output": 0.4,
            "dropout_embedding": 0.1,
        },
        {"lr": 5e-3},
        "word-cpu-as-ptb with 1.5x the regularisation (halving it lost after 2,500 steps)",
    ),
    "word-cpu-as-ptb-e200-1k": (
        {**AS_PTB, "adaptive_cutoffs": [1000, 5000], "embedding_size": 200},
        {"lr": 5e-3},
        "word-cpu-as-ptb made cheaper per token: E 200 (layer 1 reads 200 wide) and a 1,000-word "
        "head cluster (the regularisation and lr around it were measured at their optimum)",
    ),
    "word-cpu-as-ptb-tied": (
        {**AS_PTB, "tie_weights": True},
        {"lr": 5e-3},
        "word-cpu-as-ptb with its output vectors tied to the embedding (models/adaptive_heads.py): "
        "full-rank tails instead of torch's H/4 and H/16 ones, and half the word matrices",
    ),
    "word-cpu-as-ptb-bf16": (
        AS_PTB,
        {"lr": 5e-3, "precision": "bf16"},
        "word-cpu-as-ptb under bf16 autocast on a CPU with bf16 instructions (the LSTM and the "
        "head's products in bf16, log-softmax in fp32): same loss per token, 1.70x the tokens/s",
    ),
    "word-cpu-as-ptb-bf16-b64": (
        AS_PTB,
        {"lr": 7e-3, "precision": "bf16", "batch_size": 64},
        "word-cpu-as-ptb-bf16 at batch 64, lr x1.4: in bf16 on AMX batch 64 trains 1.47x the "
        "tokens/s of batch 32 (fp32: 1.02-1.16x), for half the updates per token",
    ),
    "word-cpu-as-ptb-bf16-heavy": (
        {
            **AS_PTB,
            "weight_drop": 0.3,
            "dropout_input": 0.3,
            "dropout_hidden": 0.15,
            "dropout_output": 0.4,
            "dropout_embedding": 0.1,
        },
        {"lr": 5e-3, "precision": "bf16"},
        "word-cpu-as-ptb-bf16 with 1.5x the regularisation: bf16 sees ~10 PTB epochs in 20 "
        "minutes where fp32 saw ~6, the regime where the light/heavy choice was measured",
    ),
    "word-cpu-as-ptb-bf16-h512": (
        {**AS_PTB, "hidden_size": 512},
        {"lr": 5e-3, "precision": "bf16"},
        "word-cpu-as-ptb-bf16 at 2x512: bf16 made the LSTM the cheaper part of a step, so "
        "width costs less per token than it did in fp32",
    ),
    "word-cpu-as-ptb-bf16-ntasgd": (
        AS_PTB,
        {"optimizer": "nt-asgd", "lr": 30.0, "weight_decay": 1.2e-6, "precision": "bf16"},
        "word-cpu-as-ptb-bf16 trained by NT-ASGD at AWD-LSTM's lr 30 and L2 1.2e-6 instead of "
        "AdamW with warmup + cosine: the issue's choice of optimiser, in the CPU budget",
    ),
    "h650-as": (
        {"hidden_size": 650, "tie_weights": False, "adaptive_cutoffs": [2000, 10000]},
        {"lr": 5e-3},
        "2x650, E 400, untied, adaptive softmax 2000,10000: the decoder's savings spent on "
        "width (WikiText-2 only)",
    ),
}
# Variants of --preset word-gpu for gpu_suite_word.sh (word_quality.py --device cuda
# --candidate NAME), on top of the preset as config.py holds it; word_sweep.py itself (CPU
# pairs) does not train them.
GPU_CANDIDATES: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    "word-gpu-ntasgd": (
        {},
        {"optimizer": "nt-asgd", "lr": 30.0, "weight_decay": 1.2e-6},
        "word-gpu trained by AWD-LSTM's own optimiser, NT-ASGD at lr 30 and L2 1.2e-6, instead "
        "of AdamW: on PTB AdamW's validation perplexity stalled at ~82 from epoch 28 of 52 "
        "(word_quality_gpu_ptb-lstmgen.json), where SGD is known to go on improving",
    ),
}
# The default sweep, chosen from measurements that load does not skew (word_sweep_throughput.json,
# word_sweep_tokens.json): per token of training, lr 5e-3 reached 7 % lower validation
# perplexity than 3e-3 after 80k tokens and the sizes were within 6.1 % of each other, while the
# smaller sizes train 1.3-1.6x the tokens per second on one core. Left out: e200-h400-b64 (batch
# 64 measured at 1.02x to 1.16x batch 32's tokens/s in four runs on a loaded machine: a small
# BLAS gain at best, for half the updates) and e200-h400-light (halving the dropouts changed
# nothing after 80k tokens: within 0.5 %). Either can be run with --only.
SWEEP = [
    "word-cpu",
    "word-cpu-lr5e-3",
    "e200-h400",
    "e200-h400-lr5e-3",
    "e128-h400",
    "e256-h256",
]


def candidate_preset(name: str) -> dict[str, dict[str, Any]]:
    """SWEEP_BASE with the candidate's overrides: the dict config.py would hold (a
    GPU_CANDIDATES name: --preset word-gpu as config.py holds it, with the overrides).
    A candidate trains in fp32 unless it says otherwise: every candidate before
    ``word-cpu-as-ptb-bf16`` was measured in fp32, and precision auto is bf16 on a CPU with
    bf16 instructions (runtime.resolve_precision), which would change what its name measures."""
    if name in GPU_CANDIDATES:
        model, train, _ = GPU_CANDIDATES[name]
        base = PRESETS["word-gpu"]
        return {"model": {**base["model"], **model}, "train": {**base["train"], **train}}
    model, train, _ = CANDIDATES[name]
    train = {**SWEEP_BASE["train"], "precision": "fp32", **train}
    return {"model": {**SWEEP_BASE["model"], **model}, "train": train}


def throughput(names: list[str], vocab: int, steps: int, rounds: int) -> dict[str, Any]:
    """Training tokens/s of each candidate on one thread, forward + AR/TAR + backward + clip +
    AdamW on random ids of a V-word vocabulary, drawn from Zipf's law (p ~ 1 / rank: an
    adaptive softmax's cost depends on how many targets fall past its shortlist; Zipf puts 74 %
    of them below id 2,000 at V = 33,278 where WikiText-2 has 77 %, a slightly pessimistic
    stand-in; the plain decoder's cost does not depend on the ids), and the
    baseline recipe's SGD step as ``baseline``, interleaved step by step for ``rounds`` rounds:
    ratios to word-cpu's, not absolute figures."""
    import torch
    import torch.nn.functional as F

    from lstmgen import LanguageModel
    from lstmgen.runtime import flush_denormals

    torch.set_num_threads(1)
    torch.manual_seed(0)
    zipf = 1.0 / torch.arange(1, vocab + 1, dtype=torch.float64)  # (V,) by id = by frequency

    def random_ids(B: int, T: int) -> torch.Tensor:
        return torch.multinomial(zipf, B * T, replacement=True).view(B, T)  # (B, T)

    setups = {}
    for n in names:
        p = candidate_preset(n)
        model = LanguageModel(ModelConfig.from_dict({**p["model"], "vocab_size": vocab})).train()
        B, T = p["train"]["batch_size"], p["train"]["seq_len"]
        ids = random_ids(B, T + 1)  # (B, T + 1)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        setups[n] = (model, opt, ids, p["train"])
    # the baseline recipe's step (SGD, batch 20, no AR/TAR), for a sanity check of its speed
    model = word_baseline.BaselineLSTM(vocab).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    ids = random_ids(word_baseline.BATCH, word_baseline.BPTT + 1)
    setups["baseline"] = (model, opt, ids, {"ar": 0.0, "tar": 0.0, "grad_clip": word_baseline.CLIP})
    names = [*names, "baseline"]
    seconds = dict.fromkeys(names, 0.0)
    tokens = dict.fromkeys(names, 0)
    fastest = dict.fromkeys(names, math.inf)  # seconds per token of the fastest step
    with flush_denormals(torch.device("cpu")):
        for r in range(rounds + 1):  # round 0 warms up and is not counted
            for _ in range(steps):
                for n in names:  # one step each in turn: load that comes and goes hits all alike
                    model, opt, ids, tc = setups[n]
                    t0 = time.perf_counter()
                    acts: list[torch.Tensor] = []
                    if n == "baseline":
                        logits, _ = model(ids[:, :-1])  # (B, T, V)
                        loss = F.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
                    else:  # the trainer's call: the architecture's loss (adaptive: no logits)
                        loss, _ = model(ids[:, :-1], None, acts, targets=ids[:, 1:])
                    if acts:
                        loss = loss + tc["ar"] * acts[1].pow(2).mean()
                        loss = loss + tc["tar"] * (acts[0][:, 1:] - acts[0][:, :-1]).pow(2).mean()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(model.parameters(), tc["grad_clip"])
                    opt.step()
                    dt = time.perf_counter() - t0
                    if r:
                        seconds[n] += dt
                        tokens[n] += ids[:, :-1].numel()
                        fastest[n] = min(fastest[n], dt / ids[:, :-1].numel())
    rate = {n: tokens[n] / seconds[n] for n in names}
    ref = rate.get(BASE) or rate[names[0]]
    return {
        n: {
            "ratio_to_word_cpu": round(rate[n] / ref, 3),
            # the fastest step of each: nearer what a quiet core does
            "ratio_fastest_step": round(fastest.get(BASE, fastest[names[0]]) / fastest[n], 3),
            "parameters": sum(p.numel() for p in setups[n][0].parameters()),
        }
        for n in names
    }


def prepare(args: argparse.Namespace, tmp: Path, name: str, max_steps: int = 0) -> dict[str, Any]:
    """Create the candidate's run (its own folder) and return its side_by_side job's kwargs:
    ``args.budget`` seconds, or ``max_steps`` steps and no time limit."""
    preset = candidate_preset(name)
    budget = 0.0 if max_steps else args.budget
    train = {**preset["train"], "max_steps": max_steps}
    cfg = train_config(
        BASE, budget, "cpu", args.seed, args.eval_every, args.eval_tokens, train=train
    )
    run = tmp / name / "lstmgen"
    run.parent.mkdir(parents=True)
    prepare_run(
        run, corpus_paths(args.data_root, args.corpus), cfg, ModelConfig.from_dict(preset["model"])
    )
    return {
        "run": str(run),
        "device": "cpu",
        "test_tokens": args.valid_tokens,
        "test_batch": 10,
        "split": "valid",
    }


def markdown(r: dict[str, Any]) -> str:
    """The README's table of a sweep: each candidate's full-validation perplexity (or of a
    ``--throughput`` run: each candidate's tokens/s ratio)."""
    from common import measured

    if "vocab" in r:
        return throughput_markdown(r)
    corpus = r.get("corpus", "ptb")
    corpus = {"ptb": "PTB", "wikitext-2": "WikiText-2"}.get(corpus, corpus)
    rows = [
        f"| candidate | what it changes | {corpus} valid ppl | epochs | tokens/s |",
        "|---|---|---|---|---|",
    ]
    for n, c in sorted(r["results"].items(), key=lambda kv: kv[1]["valid_ppl"]):
        ppl = f"**{c['valid_ppl']}**" if n == r.get("winner") else c["valid_ppl"]
        rows.append(f"| `{n}` | {c['why']} | {ppl} | {c['epochs']} | {c['tokens_per_s']} |")
    budget = (
        f"{r['budget_s']:.0f} s" if r.get("budget_s") else f"{r['tokens_per_candidate']} tokens"
    )
    return "\n".join(rows) + f"\n\n{budget} each; {measured(r)} (from `benchmarks/`)."


def throughput_markdown(r: dict[str, Any]) -> str:
    """A ``--throughput`` run's table: training tokens/s of each candidate over word-cpu's."""
    from common import measured

    rows = [
        "| candidate | what it changes | tokens/s / word-cpu's | fastest steps | parameters |",
        "|---|---|---|---|---|",
    ]
    for n, c in [*r["candidates"].items(), ("baseline", r["baseline"])]:
        rows.append(
            f"| `{n}` | {c['why']} | {c['ratio_to_word_cpu']} | {c['ratio_fastest_step']} | "
            f"{c['parameters']:,} |"
        )
    tail = f"V = {r['vocab']:,}, step-based, ids drawn by Zipf's law; {measured(r)}"
    return "\n".join(rows) + f"\n\n{tail} (from `benchmarks/`)."


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", nargs="+", choices=list(CANDIDATES), default=SWEEP)
    ap.add_argument(
        "--corpus",
        choices=["ptb", "wikitext-2"],
        default="ptb",
        help="wikitext-2: V = 33,278, where the decoder's share of the cost is larger",
    )
    ap.add_argument("--budget", type=float, default=240.0, help="seconds per candidate")
    ap.add_argument("--jobs", type=int, default=2, help="candidates side by side (one core each)")
    ap.add_argument(
        "--throughput",
        action="store_true",
        help="only measure each candidate's tokens/s relative to word-cpu's",
    )
    ap.add_argument("--vocab", type=int, default=10000, help="--throughput: V (33278: WT2)")
    ap.add_argument("--steps", type=int, default=5, help="--throughput: steps per round")
    ap.add_argument("--rounds", type=int, default=2, help="--throughput: interleaved rounds")
    ap.add_argument(
        "--tokens",
        type=int,
        default=0,
        help="train each candidate for this many tokens instead of --budget seconds "
        "(a step budget: the result does not depend on the machine's load)",
    )
    ap.add_argument("--eval-every", type=int, default=0, help="override the preset's")
    ap.add_argument("--eval-tokens", type=int, default=0, help="override the preset's")
    ap.add_argument(
        "--valid-tokens",
        type=int,
        default=0,
        help="score only the validation split's first N tokens at the end (0: all)",
    )
    ap.add_argument("--seed", type=int, default=1111)
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA)
    )
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    why = {n: CANDIDATES[n][2] for n in args.only}
    if args.throughput:
        res = side_by_side(
            [
                (
                    throughput,
                    {
                        "names": args.only,
                        "vocab": args.vocab,
                        "steps": args.steps,
                        "rounds": args.rounds,
                    },
                )
            ]
        )[0]
        for n, r in res.items():
            print(
                f"{n}: {r['ratio_to_word_cpu']:.3f}x word-cpu's tokens/s "
                f"(fastest steps: {r['ratio_fastest_step']:.3f}x)",
                flush=True,
            )
        out = write_result(
            args.name or "word_sweep_throughput",
            {
                "vocab": args.vocab,
                "candidates": {
                    n: {**res[n], "why": why[n], "preset": candidate_preset(n)} for n in args.only
                },
                "baseline": {
                    **res["baseline"],
                    "why": "word_baseline.py's recipe (SGD, batch 20): a sanity check of its speed",
                },
                "notes": "ids drawn from Zipf's law over the vocabulary (an adaptive softmax's "
                "cost depends on them); one process on one pinned core, one torch thread, the "
                "candidates "
                f"interleaved step by step ({args.rounds} rounds of {args.steps} steps after a "
                "warm-up round): "
                "ratios of training tokens/s, which load on the machine changes little",
            },
        )
        print(f"wrote {out}", flush=True)
        return
    results: dict[str, Any] = {}
    name = args.name or ("word_sweep_tokens" if args.tokens else "word_sweep_cpu")
    record = {
        "corpus": args.corpus,
        "budget_s": None if args.tokens else args.budget,
        "tokens_per_candidate": args.tokens or None,
        "valid_tokens_limit": args.valid_tokens,  # 0: the whole split
        "selection": "lowest valid_ppl: one stateful pass (batch 10) over the validation split "
        "after the budget, with the run's best model",
        "results": results,
        "notes": side_by_side_note + f"; {args.jobs} candidates at a time. Budgets are "
        "wall-clock seconds on one core, evaluations included; each final validation pass runs "
        "after its budget (valid_pass_s).",
    }
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(0, len(args.only), args.jobs):
            group = args.only[i : i + args.jobs]
            jobs = []
            for n in group:
                t = candidate_preset(n)["train"]
                steps = math.ceil(args.tokens / (t["batch_size"] * t["seq_len"]))
                jobs.append((lstmgen_side, prepare(args, Path(tmp), n, max_steps=steps)))
            for n, r in zip(group, side_by_side(jobs), strict=True):
                results[n] = {"why": why[n], "preset": candidate_preset(n), **r}
                print(f"{n}: valid ppl {r['valid_ppl']:.2f} ({r['epochs']} epochs)", flush=True)
            write_result(name, record)  # after each group: a stopped run keeps what it measured
    winner = min(results, key=lambda n: results[n]["valid_ppl"])
    record.update(winner=winner, winner_preset=candidate_preset(winner))
    out = write_result(name, record)
    print(f"winner: {winner} (valid ppl {results[winner]['valid_ppl']:.2f})")
    # a Python literal, ready for config.py
    print(f'PRESETS["word-cpu"] = {pprint.pformat(candidate_preset(winner), sort_dicts=False)}')
    print(f"wrote {out}", flush=True)


if __name__ == "__main__":
    main()
