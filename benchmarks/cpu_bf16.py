"""Training on CPU in bf16 against fp32: speed and loss, the evidence for ``--precision auto``
choosing bf16 on a CPU with AMX or AVX512-BF16 (runtime.resolve_precision).

For each setting, the same run (same seed, data and steps) is trained with ``--precision fp32``
and ``--precision bf16`` by lstmgen's Trainer, taking turns (fp32, bf16, bf16, fp32, ...) so a
shared machine's drift hits both; each run ends with its validation loss. The speed figure is
the ratio of training seconds (fp32 / bf16: above 1, bf16 is faster); the loss figures show
whether bf16 learns as much per step.

Settings: the default char model (2x384, batch 16x64) on tiny-shakespeare, on 1 and on 2
threads; the ``word-cpu`` preset's model (its cutoffs resolved for PTB) on PTB, 1 thread.

    python benchmarks/cpu_bf16.py            # ~8 min on a 2-core Xeon with AMX, ~6 on an EPYC
    python benchmarks/cpu_bf16.py --tiny     # seconds: a smoke run

A CPU without bf16 instructions refuses ``--precision bf16`` (one line) and this benchmark
says so and exits. $LSTMGEN_DATA_DIR (or ``--data-root``) points at the corpora.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import SHARED_DATA, measured, write_result

from lstmgen import ModelConfig, TrainConfig, Trainer
from lstmgen.config import PRESETS
from lstmgen.runtime import cpu_has_amx, cpu_has_avx512_bf16, cpu_has_native_bf16


def settings(root: Path, tiny: bool) -> dict[str, dict[str, Any]]:
    """name -> corpus files, model and train settings, steps, threads."""
    word = PRESETS["word-cpu"]
    word_train = {k: v for k, v in word["train"].items() if k != "max_time"}
    char_model = {"embedding_size": 16, "hidden_size": 32} if tiny else {}
    word_model = {**word["model"], **({"embedding_size": 32, "hidden_size": 32} if tiny else {})}
    shakespeare = [root / "tiny-shakespeare" / "train.txt", root / "tiny-shakespeare" / "val.txt"]
    ptb = [root / "ptb" / "ptb.train.txt", root / "ptb" / "ptb.valid.txt"]
    steps = 20 if tiny else None
    return {
        "char-default-1-thread": {"files": shakespeare, "model": char_model, "train": {},
                                  "steps": steps or 400, "threads": 1},
        "char-default-2-threads": {"files": shakespeare, "model": char_model, "train": {},
                                   "steps": steps or 400, "threads": 1 if tiny else 2},
        "word-cpu-ptb-1-thread": {"files": ptb, "model": word_model, "train": word_train,
                                  "steps": steps or 300, "threads": 1},
    }  # fmt: skip


def head(src: Path, dst: Path, lines: int = 1000) -> Path:
    """The first ``lines`` lines of ``src`` written to ``dst``."""
    with open(src, encoding="utf-8") as f:
        dst.write_text("".join(itertools.islice(f, lines)), encoding="utf-8")
    return dst


def train_once(spec: dict[str, Any], precision: str, folder: Path) -> dict[str, Any]:
    """One run of ``spec`` at ``precision``: training seconds and the final validation loss."""
    torch.set_num_threads(spec["threads"])
    steps = spec["steps"]
    train = {**spec["train"], "precision": precision, "max_steps": steps, "eval_every": steps,
             "sample_tokens": 0, "seed": 1, "device": "cpu", "log_every": steps}  # fmt: skip
    files = spec["files"]
    trainer = Trainer.create(folder, [files[0]], TrainConfig.from_dict(train),
                             ModelConfig.from_dict(spec["model"]), valid=[files[1]])  # fmt: skip
    assert trainer.precision == precision
    t0 = time.perf_counter()
    summary = trainer.fit()
    seconds = time.perf_counter() - t0
    return {"seconds": round(seconds, 2), "val_loss": summary.get("best_val_loss")}


def markdown(r: dict[str, Any]) -> str:
    """The README table (render_readme.py)."""
    rows = [
        "| setting | steps | threads | fp32 s | bf16 s | bf16 speed / fp32 | val loss fp32 "
        "| val loss bf16 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, x in r["results"].items():
        fp32 = statistics.median(run["seconds"] for run in x["runs"]["fp32"])
        bf16 = statistics.median(run["seconds"] for run in x["runs"]["bf16"])
        rows.append(
            f"| {name} | {x['steps']} | {x['threads']} | {fp32:.1f} | {bf16:.1f} "
            f"| **{x['speedup_bf16']:.2f}x** | {x['val_loss_fp32']:.4f} "
            f"| {x['val_loss_bf16']:.4f} |"
        )
    cpu = "AMX" if r["amx"] else "AVX512-BF16" if r["avx512_bf16"] else "no bf16 instructions"
    return "\n".join(rows) + (
        f"\n\nMedian of {len(x['runs']['fp32'])} runs each, taking turns; this CPU: {cpu}; "
        f"{measured(r)} (from `benchmarks/`)."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=2, help="fp32/bf16 pairs per setting")
    ap.add_argument("--tiny", action="store_true", help="a seconds-long smoke run")
    ap.add_argument(
        "--data-root", type=Path, default=Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA)
    )
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    if not cpu_has_native_bf16():
        raise SystemExit(
            "this CPU has no bf16 instructions (AVX512-BF16 or AMX): nothing to measure"
        )
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, spec in settings(args.data_root, args.tiny).items():
            if args.tiny:  # the corpora's first lines: tokenizing them whole takes a while
                spec["files"] = [head(f, Path(tmp) / f"{name}-{f.name}") for f in spec["files"]]
            runs: dict[str, list[dict[str, Any]]] = {"fp32": [], "bf16": []}
            for r in range(args.rounds):
                order = ["fp32", "bf16"] if r % 2 == 0 else ["bf16", "fp32"]
                for precision in order:
                    folder = Path(tmp) / f"{name}-{precision}-{r}"
                    runs[precision].append(train_once(spec, precision, folder))
                    print(name, precision, runs[precision][-1], flush=True)
            fp32 = statistics.median(x["seconds"] for x in runs["fp32"])
            bf16 = statistics.median(x["seconds"] for x in runs["bf16"])
            results[name] = {
                "steps": spec["steps"],
                "threads": spec["threads"],
                "runs": runs,
                "speedup_bf16": round(fp32 / bf16, 3),
                "val_loss_fp32": runs["fp32"][0]["val_loss"],
                "val_loss_bf16": runs["bf16"][0]["val_loss"],
            }
            print(f"{name}: bf16 {fp32 / bf16:.2f}x the speed of fp32", flush=True)
    payload = {
        "amx": cpu_has_amx(),
        "avx512_bf16": cpu_has_avx512_bf16(),
        "notes": "speedup_bf16: median fp32 training seconds / median bf16 training seconds for "
        "the same steps (fp32 and bf16 runs taking turns, one process, one setting at a time); "
        "val_loss_*: the runs' validation loss after those steps (same seed and data).",
        "results": results,
    }
    out = write_result(args.name or ("cpu_bf16_tiny" if args.tiny else "cpu_bf16"), payload)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
