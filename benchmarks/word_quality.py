"""Word-level quality (issue #16): Penn Treebank and WikiText-2 test perplexity of lstmgen with
its word preset against the ``word_language_model`` baseline recipe (word_baseline.py), both
in the same run, with the same wall-clock budget each (evaluations included).

    python benchmarks/word_quality.py                         # CPU: word-cpu, 20 min per model
    python benchmarks/word_quality.py --device cuda           # GPU: word-gpu, 10 min per model
    python benchmarks/word_quality.py --budget 30 --eval-tokens 2000 --test-tokens 2000  # smoke
    python benchmarks/word_quality.py --corpora ptb --only lstmgen --device cuda --budget 480

Protocol: the published splits and vocabularies (10,000 and 33,278 words, lstmgen's word
tokenizer reproduces them: tests/test_word_corpora.py); both models read the same token ids.
Test perplexity is one stateful pass over the whole test split, state carried between windows
of 35, ``--test-batch`` contiguous streams (10, as the baseline's own test; 1 scores every
token but the first), each side with its best model by validation. The JSON holds both
curves (validation perplexity against training seconds) and the floors: on CPU lstmgen's
perplexity at least 25 % below the baseline's; on a GPU PTB <= 75 (aim 65) and WikiText-2
<= 85 (aim 75). ``--only`` runs one side (a GPU machine whose calls are limited to 10 min).

$LSTMGEN_DATA_DIR (or ``--data-root``) points at the corpora (default ../shared/data).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import word_baseline
from common import SHARED_DATA, write_result

from lstmgen import Callback, LanguageModel, ModelConfig, TrainConfig, Trainer
from lstmgen.config import PRESETS
from lstmgen.runtime import resolve_device

CORPORA = {
    "ptb": ("ptb", "ptb.{}.txt", ("train", "valid", "test")),
    "wikitext-2": ("wikitext-2", "wiki.{}.tokens", ("train", "valid", "test")),
}
GPU_FLOORS = {"ptb": (75.0, 65.0), "wikitext-2": (85.0, 75.0)}  # (floor, aim)
CPU_FLOOR = 0.75  # lstmgen's test perplexity / the baseline's, at most


class Curve(Callback):
    def __init__(self) -> None:
        self.points: list[dict[str, float]] = []

    def on_eval(self, trainer: Trainer, metrics: dict[str, Any], sample: str) -> None:
        self.points.append({
            "elapsed_s": round(metrics["elapsed"], 1),
            "val_ppl": round(math.exp(metrics["val_loss"]), 2),
            "step": metrics["step"],
            "epoch": round(metrics["epoch"], 3),
        })  # fmt: skip
        print(f"lstmgen step {metrics['step']}: val ppl {self.points[-1]['val_ppl']} "
              f"at {metrics['elapsed']:.0f}s", flush=True)  # fmt: skip


def run_corpus(args: argparse.Namespace, name: str, tmp: Path) -> dict[str, Any]:
    folder, pattern, splits = CORPORA[name]
    paths = [args.data_root / folder / pattern.format(s) for s in splits]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"error: missing {', '.join(missing)} (see --data-root)")
    device = resolve_device(args.device)
    preset = PRESETS[args.preset]
    train_cfg = TrainConfig.from_dict({
        **preset["train"], "max_time": float(args.budget), "device": args.device,
        "sample_tokens": 0, "seed": args.seed,
        **({"eval_every": args.eval_every} if args.eval_every else {}),
        **({"eval_tokens": args.eval_tokens} if args.eval_tokens else {}),
    })  # fmt: skip
    model_cfg = ModelConfig.from_dict(preset["model"])
    curve = Curve()
    run = tmp / name
    trainer = Trainer.create(run, [paths[0]], train_cfg, model_cfg, valid=[paths[1]],
                             test=[paths[2]], callbacks=[curve])  # fmt: skip
    corpus, vocab = trainer.corpus, trainer.corpus.tokenizer.vocab_size
    out: dict[str, Any] = {
        "corpus": name,
        "vocab": vocab,
        "tokens": {
            "train": len(corpus.train),
            "valid": len(corpus.valid),
            "test": len(corpus.test),
        },  # fmt: skip
        "budget_s": args.budget,
        "test_batch": args.test_batch,
        # a smoke run may score a prefix only; the published protocol is the whole split (0)
        "test_tokens_limit": args.test_tokens,
        "baseline_valid_tokens_limit": args.eval_tokens,
    }
    test_tokens = corpus.test.tokens[: args.test_tokens or None]
    valid_tokens = corpus.valid.tokens[: args.eval_tokens or None]
    if args.only in (None, "lstmgen"):
        summary = trainer.fit()
        best = LanguageModel.from_pretrained(run, device=device).eval()
        ppl, scored = word_baseline.stateful_perplexity(best, test_tokens, device,
                                                        args.test_batch)  # fmt: skip
        out["lstmgen"] = {
            "preset": args.preset,
            "test_ppl": round(ppl, 2),
            "test_tokens_scored": scored,
            "train_seconds": round(summary["elapsed"], 1),
            "steps": summary["step"],
            "epochs": round(summary["epoch"], 3),
            "parameters": best.num_parameters(),
            "curve": curve.points,
            "model_config": trainer.model.config.to_dict(),
            "train_config": train_cfg.to_dict(),
        }
        print(f"{name}: lstmgen --preset {args.preset} test ppl {ppl:.2f}", flush=True)
    else:
        trainer.lock.release()
    if args.only in (None, "baseline"):
        base = word_baseline.train(corpus.train.tokens, valid_tokens, vocab,
                                   args.budget, device, seed=args.seed)  # fmt: skip
        ppl, scored = word_baseline.stateful_perplexity(base.model, test_tokens, device,
                                                        args.test_batch)  # fmt: skip
        out["baseline"] = {
            "recipe": "word_language_model defaults: 2x200 LSTM, dropout 0.2, untied, SGD lr 20 "
            "/4 on a stalled epoch, clip 0.25, batch 20, BPTT 35 (benchmarks/word_baseline.py)",
            "test_ppl": round(ppl, 2),
            "test_tokens_scored": scored,
            "train_seconds": round(base.seconds, 1),
            "steps": base.steps,
            "parameters": sum(p.numel() for p in base.model.parameters()),
            "curve": base.curve,
        }
        print(f"{name}: baseline test ppl {ppl:.2f}", flush=True)
    if "lstmgen" in out and "baseline" in out:
        ratio = out["lstmgen"]["test_ppl"] / out["baseline"]["test_ppl"]
        out["ratio_lstmgen_to_baseline"] = round(ratio, 3)
    if device.type == "cuda" and "lstmgen" in out:
        floor, aim = GPU_FLOORS[name]
        out["floor"], out["aim"] = floor, aim
        out["meets_floor"] = out["lstmgen"]["test_ppl"] <= floor
    elif "ratio_lstmgen_to_baseline" in out:
        out["floor"] = f"lstmgen / baseline <= {CPU_FLOOR}"
        out["meets_floor"] = out["ratio_lstmgen_to_baseline"] <= CPU_FLOOR
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per model (default 1200 on CPU, 600 on CUDA)")  # fmt: skip
    ap.add_argument("--corpora", nargs="+", choices=sorted(CORPORA), default=list(CORPORA))
    ap.add_argument("--preset", default=None, help="default word-cpu on CPU, word-gpu on CUDA")
    ap.add_argument("--only", choices=["lstmgen", "baseline"], default=None)
    ap.add_argument("--test-batch", type=int, choices=[1, 10], default=10)
    ap.add_argument("--eval-every", type=int, default=0, help="override the preset's")
    ap.add_argument("--eval-tokens", type=int, default=0,
                    help="validation tokens per evaluation, both sides (0: the preset's for "
                    "lstmgen, all for the baseline); for smoke runs")  # fmt: skip
    ap.add_argument("--test-tokens", type=int, default=0,
                    help="score only the test split's first N tokens (0: all, the protocol); "
                    "for smoke runs")  # fmt: skip
    ap.add_argument("--seed", type=int, default=1111)
    ap.add_argument("--data-root", type=Path,
                    default=Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA))  # fmt: skip
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    gpu = resolve_device(args.device).type == "cuda"
    args.budget = args.budget or (600.0 if gpu else 1200.0)
    args.preset = args.preset or ("word-gpu" if gpu else "word-cpu")
    results = []
    name = args.name or "word_quality_" + ("gpu" if gpu else "cpu")
    for corpus in args.corpora:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_corpus(args, corpus, Path(tmp)))
        write_result(name, {  # after each corpus: a run stopped later keeps what it measured
            "results": results,
            "notes": "CPU runs on the development machine shared 2 cores with five other "
            "engineers' jobs: wall-clock budgets there are noisy and favour neither side "
            "only on average. The lead reruns the 20-minute budget on a quiet machine.",
        })  # fmt: skip
    print(f"wrote {name}.json", flush=True)


if __name__ == "__main__":
    main()
