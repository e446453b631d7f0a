"""Corpora larger than memory: peak memory and speed of tokenizing and training on a big corpus.

A corpus of ``--size-mb`` megabytes (default 2048) is made by repeating the lines of the shared
corpora (tiny-shakespeare, PTB, WikiText-2), shuffled anew each round with a fixed seed, into a
temporary folder (removed afterwards; never committed). Then, each in its own process so that
its peak resident memory (``VmHWM``) is its own:

- for each tokenizer (char, byte, word, bpe): fitting the vocabulary (one streaming pass) and
  tokenizing into the run's memmapped token cache (a second pass): seconds, MB/s, peak RSS;
- for one tokenizer (``--train-tokenizer``): building the trainer on that cache and taking
  ``--steps`` training steps: the time to the first step, and peak RSS.

The floor (issue #15): peak RSS under 1.5 GB in every process, whatever the corpus size.

    python benchmarks/big_corpus.py --size-mb 200
    python benchmarks/big_corpus.py --size-mb 2048 --tokenizers char --train-tokenizer char
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHARED_DATA, write_result  # noqa: E402

SOURCES = (
    "tiny-shakespeare/input.txt",
    "ptb/ptb.train.txt",
    "wikitext-2/wiki.train.tokens",
)
RSS_FLOOR_MB = 1536
MB = 1 << 20


def make_corpus(path: Path, size_mb: float, seed: int = 0, data: Path = SHARED_DATA) -> int:
    """Write about ``size_mb`` MB of shuffled lines of the shared corpora to ``path`` (whole
    lines, so a little more); return its size in bytes. Memory: the source lines only."""
    lines: list[str] = []
    for name in SOURCES:
        with open(data / name, encoding="utf-8") as f:
            lines += f.read().splitlines(keepends=True)
    rng = random.Random(seed)
    target, written = int(size_mb * MB), 0
    with open(path, "w", encoding="utf-8") as out:
        while written < target:
            rng.shuffle(lines)
            for i in range(0, len(lines), 4096):
                piece = "".join(lines[i : i + 4096])
                out.write(piece)
                written += len(piece.encode("utf-8"))
                if written >= target:
                    break
    return path.stat().st_size


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM), in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _config(kind: str, args: argparse.Namespace):
    from lstmgen import TrainConfig

    return TrainConfig(
        tokenizer=kind,
        vocab_size=args.bpe_vocab,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        max_steps=args.steps,
        eval_every=10**9,  # only the final evaluation, on a few tokens
        eval_tokens=args.eval_tokens,
        sample_tokens=0,
        warmup_steps=1,
        device="cpu",
        log_every=1,
    )


def child_tokenize(args: argparse.Namespace) -> dict:
    """Fit the vocabulary, then tokenize into ``args.run``'s cache (what ``train`` does first)."""
    from lstmgen.corpus import prepare_corpus
    from lstmgen.data import iter_corpus
    from lstmgen.tokenizers import fit_tokenizer, safe_cut_for

    config = _config(args.kind, args)
    corpus = Path(args.corpus)
    t0 = time.perf_counter()
    tok = fit_tokenizer(
        args.kind,
        iter_corpus([corpus], cut=safe_cut_for(args.kind)),
        vocab_size=config.vocab_size,
    )
    fit_s = time.perf_counter() - t0
    rss_fit = peak_rss_mb()
    t0 = time.perf_counter()
    c = prepare_corpus(args.run, config, [corpus], tokenizer=tok)
    tokenize_s = time.perf_counter() - t0
    tok.save(Path(args.run) / "bench_tokenizer.json")
    return {
        "vocab_size": tok.vocab_size,
        "tokens": len(c.train) + len(c.valid),
        "fit_s": round(fit_s, 2),
        "tokenize_s": round(tokenize_s, 2),
        "peak_rss_fit_mb": round(rss_fit, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def child_train(args: argparse.Namespace) -> dict:
    """Build the trainer on the cache ``child_tokenize`` made and take ``args.steps`` steps."""
    t_start = time.perf_counter()
    import torch

    from lstmgen import LanguageModel, ModelConfig
    from lstmgen.corpus import prepare_corpus
    from lstmgen.rundir import RunDir
    from lstmgen.tokenizers import load_tokenizer
    from lstmgen.training.trainer import Callback, Trainer

    torch.set_num_threads(args.threads)
    config = _config(args.kind, args)
    tok = load_tokenizer(Path(args.run) / "bench_tokenizer.json")
    corpus = prepare_corpus(args.run, config, [args.corpus], tokenizer=tok)  # the cache
    t_cache = time.perf_counter()
    model = LanguageModel(
        ModelConfig(vocab_size=tok.vocab_size, hidden_size=args.hidden, num_layers=2), tok
    )
    steps: list[float] = []

    class Clock(Callback):
        def on_step(self, trainer: Trainer) -> None:
            steps.append(time.perf_counter())

    trainer = Trainer(model, config, corpus, args.run, [Clock()])
    trainer.pos.warmup = trainer.planned_warmup()
    RunDir(args.run).write_new_run(config, corpus.sources, model)
    t_built = time.perf_counter()
    summary = trainer.fit()
    return {
        "steps": len(steps),
        "hidden_size": args.hidden,
        "open_cache_s": round(t_cache - t_start, 2),  # torch's import included
        "build_trainer_s": round(t_built - t_cache, 2),
        "time_to_first_step_s": round(steps[0] - t_start, 2),
        "step_s": round((steps[-1] - steps[0]) / max(len(steps) - 1, 1), 3),
        "final_val_loss": summary.get("best_val_loss"),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def _run_child(what: str, kind: str, corpus: Path, run: Path, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", what, "--kind", kind, "--corpus", str(corpus)]
    cmd += ["--run", str(run), "--steps", str(args.steps), "--bpe-vocab", str(args.bpe_vocab)]
    cmd += ["--hidden", str(args.hidden), "--threads", str(args.threads)]
    cmd += ["--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len)]
    cmd += ["--eval-tokens", str(args.eval_tokens)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{what} {kind} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_s"] = round(time.perf_counter() - t0, 2)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=float, default=2048.0)
    p.add_argument("--tokenizers", default="char,byte,word,bpe")
    p.add_argument("--train-tokenizer", default="char", help="'' to skip the training part")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=64)
    p.add_argument("--eval-tokens", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--bpe-vocab", type=int, default=8000)
    p.add_argument("--tmp", default=None, help="folder for the corpus and runs (default: $TMPDIR)")
    p.add_argument("--name", default=None, help="result file name (default big_corpus_<size>mb)")
    p.add_argument("--notes", default="")
    p.add_argument("--child", choices=["tokenize", "train"], help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--corpus", help=argparse.SUPPRESS)
    p.add_argument("--run", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        fn = child_tokenize if args.child == "tokenize" else child_train
        print(json.dumps(fn(args)))
        return

    kinds = [k for k in args.tokenizers.split(",") if k]
    train_kind = args.train_tokenizer
    if train_kind and train_kind not in kinds:
        kinds.append(train_kind)  # training needs its cache
    work = Path(tempfile.mkdtemp(prefix="lstmgen-big-", dir=args.tmp))
    try:
        corpus = work / "corpus.txt"
        t0 = time.perf_counter()
        nbytes = make_corpus(corpus, args.size_mb)
        print(f"corpus: {nbytes / MB:,.0f} MB in {time.perf_counter() - t0:.0f} s", flush=True)
        tokenize: dict[str, dict] = {}
        for kind in kinds:
            r = _run_child("tokenize", kind, corpus, work / f"run-{kind}", args)
            # byte has no vocabulary to fit: no rate for it
            r["fit_mb_per_s"] = round(nbytes / MB / r["fit_s"], 2) if kind != "byte" else None
            r["tokenize_mb_per_s"] = round(nbytes / MB / max(r["tokenize_s"], 1e-9), 2)
            tokenize[kind] = r
            print(f"tokenize {kind}: {json.dumps(r)}", flush=True)
            if kind != train_kind:  # the disk holds one cache at a time
                shutil.rmtree(work / f"run-{kind}")
        train = None
        if train_kind:
            train = _run_child("train", train_kind, corpus, work / f"run-{train_kind}", args)
            t = tokenize[train_kind]
            train["time_to_first_step_from_scratch_s"] = round(
                t["fit_s"] + t["tokenize_s"] + train["time_to_first_step_s"], 2
            )
            print(f"train {train_kind}: {json.dumps(train)}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peaks = [r["peak_rss_mb"] for r in [*tokenize.values(), *([train] if train else [])]]
    out = write_result(
        args.name or f"big_corpus_{args.size_mb:g}mb",
        {
            "corpus_bytes": nbytes,
            "corpus_sources": list(SOURCES),
            "tokenize": tokenize,
            "train": {"tokenizer": train_kind, **train} if train else None,
            "rss_floor_mb": RSS_FLOOR_MB,
            "max_peak_rss_mb": max(peaks),
            "under_floor": max(peaks) < RSS_FLOOR_MB,
            "notes": args.notes
            or "measured on a 2-core machine shared with six other engineers' jobs: timings"
            " are noisy (peak RSS is not). Peak RSS is VmHWM of the process doing the work; it"
            " counts the memmapped token pages training has touched.",
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
