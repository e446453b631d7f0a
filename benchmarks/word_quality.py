"""Word-level quality (issue #16): Penn Treebank and WikiText-2 test perplexity of lstmgen with
its word preset against the ``word_language_model`` baseline recipe (word_baseline.py), both
in the same run, with the same wall-clock budget each (evaluations included). On CPU both
sides run side by side (``common.side_by_side``: at the same time, one core and one torch
thread each), so the four 20-minute runs take 40 minutes and both sides meet the same machine;
``--mode sequential`` runs them one after the other with the whole machine each.

    python benchmarks/word_quality.py                         # CPU: word-cpu, 20 min, 40 min wall
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
import time
from pathlib import Path
from typing import Any

import numpy as np
import word_baseline
from common import SHARED_DATA, side_by_side, side_by_side_note, write_result

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


def corpus_paths(data_root: Path, name: str) -> list[Path]:
    folder, pattern, splits = CORPORA[name]
    paths = [data_root / folder / pattern.format(s) for s in splits]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"error: missing {', '.join(missing)} (see --data-root)")
    return paths


def train_config(
    preset: str,
    budget: float,
    device: str,
    seed: int,
    eval_every: int = 0,
    eval_tokens: int = 0,
    train: dict[str, Any] | None = None,
) -> TrainConfig:
    """The preset's TrainConfig (or ``train``, a sweep candidate's) with the benchmark's budget
    and a smoke run's overrides."""
    return TrainConfig.from_dict({
        **(train or PRESETS[preset]["train"]), "max_time": float(budget), "device": device,
        "sample_tokens": 0, "seed": seed,
        **({"eval_every": eval_every} if eval_every else {}),
        **({"eval_tokens": eval_tokens} if eval_tokens else {}),
    })  # fmt: skip


def prepare_run(run: Path, paths: list[Path], train_cfg: TrainConfig,
                model_cfg: ModelConfig) -> dict[str, Any]:  # fmt: skip
    """Create lstmgen's run (tokenize the corpus, build the model) and save each split's ids
    as ``run/../<split>.npy`` for the baseline, so that both sides read the same ids and the
    side-by-side processes start training at once. The run is then resumed by ``lstmgen_side``.
    """
    trainer = Trainer.create(run, [paths[0]], train_cfg, model_cfg, valid=[paths[1]],
                             test=[paths[2]])  # fmt: skip
    corpus = trainer.corpus
    splits = {"train": corpus.train, "valid": corpus.valid, "test": corpus.test}
    for split, data in splits.items():
        np.save(run.parent / f"{split}.npy", np.asarray(data.tokens, dtype=np.int64))
    trainer.lock.release()
    return {
        "vocab": corpus.tokenizer.vocab_size,
        "tokens": {split: len(data) for split, data in splits.items()},
    }


def lstmgen_side(
    run: str, device: str, test_tokens: int, test_batch: int, split: str = "test"
) -> dict[str, Any]:
    """Train lstmgen's prepared run for its ``max_time``, then score its best model on the test
    split (one stateful pass, after the budget; ``split="valid"`` for a sweep, which must not
    choose by test). A side_by_side job: JSON in, JSON out."""
    dev = resolve_device(device)
    curve = Curve()
    trainer = Trainer.resume(run, callbacks=[curve])
    summary = trainer.fit()  # releases the run's lock
    best = LanguageModel.from_pretrained(run, device=dev).eval()
    test = np.load(Path(run).parent / f"{split}.npy")[: test_tokens or None]
    t0 = time.perf_counter()
    ppl, scored = word_baseline.stateful_perplexity(best, test, dev, test_batch)
    return {
        f"{split}_ppl": round(ppl, 2),
        f"{split}_tokens_scored": scored,
        f"{split}_pass_s": round(time.perf_counter() - t0, 1),
        "train_seconds": round(summary["elapsed"], 1),
        "steps": summary["step"],
        "epochs": round(summary["epoch"], 3),
        "tokens_per_s": round(trainer.tokens_seen() / max(summary["elapsed"], 1e-9)),
        "best_val_ppl": round(math.exp(trainer.pos.best_val), 2),
        "parameters": best.num_parameters(),
        "curve": curve.points,
        "model_config": trainer.model.config.to_dict(),
        "train_config": trainer.config.to_dict(),
    }


def baseline_side(
    folder: str,
    vocab: int,
    budget: float,
    device: str,
    seed: int,
    valid_tokens: int,
    test_tokens: int,
    test_batch: int,
) -> dict[str, Any]:
    """Train the word_language_model recipe on the prepared ids for ``budget`` seconds, then
    score its best model on the test split (after the budget). A side_by_side job."""
    dev = resolve_device(device)
    ids = {s: np.load(Path(folder) / f"{s}.npy") for s in ("train", "valid", "test")}
    base = word_baseline.train(ids["train"], ids["valid"][: valid_tokens or None], vocab,
                               budget, dev, seed=seed)  # fmt: skip
    t0 = time.perf_counter()
    ppl, scored = word_baseline.stateful_perplexity(base.model, ids["test"][: test_tokens or None],
                                                    dev, test_batch)  # fmt: skip
    return {
        "recipe": "word_language_model defaults: 2x200 LSTM, dropout 0.2, untied, SGD lr 20 "
        "/4 on a stalled epoch, clip 0.25, batch 20, BPTT 35 (benchmarks/word_baseline.py)",
        "test_ppl": round(ppl, 2),
        "test_tokens_scored": scored,
        "test_pass_s": round(time.perf_counter() - t0, 1),
        "train_seconds": round(base.seconds, 1),
        "steps": base.steps,
        "tokens_per_s": round(base.tokens / max(base.seconds, 1e-9)),
        "parameters": sum(p.numel() for p in base.model.parameters()),
        "curve": base.curve,
    }


def side_settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """lstmgen's model and train settings: the preset's, or a word_sweep.py candidate's (the
    preset with the candidate's overrides), so a sweep's winner can be measured at the full
    budget before it becomes the preset."""
    if not args.candidate:
        return PRESETS[args.preset]
    from word_sweep import CANDIDATES, GPU_CANDIDATES, candidate_preset  # it imports this module

    if args.candidate not in CANDIDATES and args.candidate not in GPU_CANDIDATES:
        raise SystemExit(
            f"error: unknown candidate {args.candidate!r} (word_sweep.CANDIDATES, GPU_CANDIDATES)"
        )
    return candidate_preset(args.candidate)


def run_corpus(args: argparse.Namespace, name: str, tmp: Path) -> dict[str, Any]:
    paths = corpus_paths(args.data_root, name)
    device = resolve_device(args.device)
    settings = side_settings(args)
    train_cfg = train_config(args.preset, args.budget, args.device, args.seed,
                             args.eval_every, args.eval_tokens, settings["train"])  # fmt: skip
    run = tmp / "lstmgen"
    out: dict[str, Any] = {
        "corpus": name,
        **prepare_run(run, paths, train_cfg, ModelConfig.from_dict(settings["model"])),
        "budget_s": args.budget,
        "mode": args.mode,
        "test_batch": args.test_batch,
        # a smoke run may score a prefix only; the published protocol is the whole split (0)
        "test_tokens_limit": args.test_tokens,
        "baseline_valid_tokens_limit": args.eval_tokens,
        "test_pass": "after the budget: each side's final stateful pass over the test split "
        "(its best model by validation) is not counted in budget_s (test_pass_s)",
    }
    sides = {
        "lstmgen": (lstmgen_side, {"run": str(run), "device": args.device,
                                   "test_tokens": args.test_tokens,
                                   "test_batch": args.test_batch}),
        "baseline": (baseline_side, {"folder": str(tmp), "vocab": out["vocab"],
                                     "budget": args.budget, "device": args.device,
                                     "seed": args.seed, "valid_tokens": args.eval_tokens,
                                     "test_tokens": args.test_tokens,
                                     "test_batch": args.test_batch}),
    }  # fmt: skip
    chosen = [k for k in sides if args.only in (None, k)]
    if args.mode == "side-by-side":
        results = side_by_side([sides[k] for k in chosen])
    else:
        results = [fn(**kwargs) for fn, kwargs in (sides[k] for k in chosen)]
    out.update(zip(chosen, results, strict=True))
    if "lstmgen" in out:
        which = {"candidate": args.candidate} if args.candidate else {}
        out["lstmgen"] = {"preset": args.preset, **which, **out["lstmgen"]}
    for side in chosen:
        print(f"{name}: {side} test ppl {out[side]['test_ppl']:.2f}", flush=True)
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


def _setting(side: dict[str, Any]) -> str:
    if side.get("candidate"):
        return f"candidate `{side['candidate']}` of word_sweep.py"
    return f"`--preset {side.get('preset', '')}`"


def markdown(r: dict[str, Any]) -> str:
    """The README's table of a word_quality result: test perplexity of each side per corpus."""
    from common import measured

    rows = [
        "| corpus | lstmgen test ppl | baseline test ppl | lstmgen / baseline | floor "
        "| lstmgen epochs, tokens/s | baseline epochs, tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in r["results"]:
        lg, bl = c.get("lstmgen", {}), c.get("baseline", {})
        base_epochs = bl.get("curve", [{}])[-1].get("epoch", "") if bl else ""
        base_ppl = bl.get("test_ppl", "") if bl else "not run (`--only lstmgen`)"
        rows.append(
            f"| {c['corpus']} | **{lg.get('test_ppl', '')}** ({_setting(lg)}) "
            f"| {base_ppl} | {c.get('ratio_lstmgen_to_baseline', '')} "
            f"| {c.get('floor', '')}: {'met' if c.get('meets_floor') else 'not met'} "
            f"| {lg.get('epochs', '')}, {lg.get('tokens_per_s', '')} "
            + (f"| {base_epochs}, {bl.get('tokens_per_s', '')} |" if bl else "| |")
        )
    budget = r["results"][0]["budget_s"] if r["results"] else 0
    return "\n".join(rows) + (
        f"\n\n{budget:.0f} s of training each ({r['results'][0].get('mode', '')}), the whole "
        f"test split scored statefully after it; {measured(r)} (from `benchmarks/`)."
    )


def curve_markdown(r: dict[str, Any]) -> str:
    """The README's learning curves of a word_quality result: each side's validation perplexity
    against training seconds, merged by time (the issue's "report the curve")."""
    from common import measured

    out = []
    for c in r["results"]:
        sides = [(s, c[s]["curve"]) for s in ("lstmgen", "baseline") if c.get(s)]
        by_time = [{round(p["elapsed_s"]): p for p in curve} for _, curve in sides]
        rows = [
            f"| {c['corpus']}: training s | " + " | ".join(f"{s} valid ppl" for s, _ in sides)
            + " |",
            "|---" * (len(sides) + 1) + "|",
        ]  # fmt: skip
        for t in sorted(set().union(*by_time)):
            cells = [
                f"{side[t]['val_ppl']} (epoch {side[t]['epoch']:.1f})" if t in side else ""
                for side in by_time
            ]
            rows.append(f"| {t} | " + " | ".join(cells) + " |")
        out.append("\n".join(rows))
    return "\n\n".join(out) + (
        "\n\nlstmgen evaluates every `eval_every` steps on a prefix of the validation split "
        "(`eval_tokens`), the baseline after each epoch on all of it; "
        f"{measured(r)} (from `benchmarks/`)."
    )


NOTES = {
    "side-by-side": side_by_side_note + ". Each side's budget is wall-clock seconds on its one "
    "core, evaluations included; the final test pass runs after it (test_pass_s).",
    "sequential": "one side after the other, each with the whole machine and the same "
    "wall-clock budget (evaluations included); on a shared machine each side met different "
    "neighbours. The final test pass runs after the budget (test_pass_s).",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budget", type=float, default=None,
                    help="seconds per model (default 1200 on CPU, 600 on CUDA)")  # fmt: skip
    ap.add_argument("--corpora", nargs="+", choices=sorted(CORPORA), default=list(CORPORA))
    ap.add_argument("--preset", default=None, help="default word-cpu on CPU, word-gpu on CUDA")
    ap.add_argument(
        "--candidate",
        default=None,
        help="lstmgen side: a word_sweep.py candidate instead of the preset "
        "(e.g. word-cpu-as: adaptive softmax)",
    )
    ap.add_argument("--only", choices=["lstmgen", "baseline"], default=None)
    ap.add_argument("--mode", choices=["side-by-side", "sequential"], default=None,
                    help="side-by-side (CPU default): both sides at once, one core and one "
                    "torch thread each, the same budget; sequential (CUDA default): one after "
                    "the other, each with the whole machine")  # fmt: skip
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
    args.mode = args.mode or ("sequential" if gpu else "side-by-side")
    results = []
    name = args.name or "word_quality_" + ("gpu" if gpu else "cpu")
    for corpus in args.corpora:
        with tempfile.TemporaryDirectory() as tmp:
            results.append(run_corpus(args, corpus, Path(tmp)))
        write_result(name, {  # after each corpus: a run stopped later keeps what it measured
            "results": results,
            "notes": NOTES[args.mode],
        })  # fmt: skip
    print(f"wrote {name}.json", flush=True)


if __name__ == "__main__":
    main()
