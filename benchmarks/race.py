"""Time-to-quality race on tiny-shakespeare (nanoGPT's split: train.txt / val.txt).

Trains a preset for a fixed budget of training seconds (``max_time``, which also drives the
cosine schedule), evaluating the whole validation text every ``eval_every`` steps, and records
the best validation loss in nats/char, when it was reached (training seconds and wall-clock
seconds since training began, evaluations and checkpoints included), the validation curve, the
steps, epochs, tokens/s and the full settings. Every evaluation scores each character of
val.txt once, statefully (16 contiguous streams, each warmed up on the 256 characters before
it; see lstmgen/evaluate.py); the best checkpoint is the one kept.

    python benchmarks/race.py --preset gpu-fast --device cuda --budget 120   # -> race_cuda
    python benchmarks/race.py --preset gpu-fast --device cuda dropout=0.5 --name trial
    python benchmarks/race.py --tiny --device cpu --budget 2                 # a smoke run

Overrides are ModelConfig/TrainConfig fields as key=value. ``--out-dir`` (or
$LSTMGEN_RESULTS_DIR) says where the JSON goes; ``--data`` (or $LSTMGEN_DATA_DIR/tiny-shakespeare)
where the corpus is; ``--run-dir`` keeps the run (best model included) instead of a temporary one.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import SHARED_DATA, measured, write_result

from lstmgen import Callback, LstmgenError, ModelConfig, TrainConfig, Trainer
from lstmgen.config import PRESETS
from lstmgen.runtime import resolve_device

# Best validation loss (nats/char) of other recipes on this split, measured on the same machine
# types (issue 5 for the GPU, the core issue for the CPU), and when they reached it.
REFERENCES = {
    "cpu": {"nanoGPT CPU recipe": 1.886, "plain 2x256 LSTM": 1.725},
    "cuda": {
        "nanoGPT train_shakespeare_char": 1.458,
        "plain 3x512 LSTM, batch 128x256": 1.4305,
    },
}
REFERENCE_SECONDS = {
    "cpu": {"nanoGPT CPU recipe": 194, "plain 2x256 LSTM": 193},
    "cuda": {"nanoGPT train_shakespeare_char": 70, "plain 3x512 LSTM, batch 128x256": 80},
}
TINY_CHARS = (40_000, 8_000)  # --tiny: the first characters of train.txt and val.txt


def parse_value(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def split_overrides(pairs: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """key=value strings -> (ModelConfig overrides, TrainConfig overrides)."""
    model_fields = set(ModelConfig.__dataclass_fields__)
    train_fields = set(TrainConfig.__dataclass_fields__)
    model, train = {}, {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or key not in model_fields | train_fields:
            raise SystemExit(f"not a ModelConfig/TrainConfig field=value: {pair!r}")
        (model if key in model_fields else train)[key] = parse_value(value)
    return model, train


class Curve(Callback):
    """Every evaluation as {step, elapsed_s (training), wall_s (since fit began), val_loss}."""

    def __init__(self, on_point: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.started = time.perf_counter()
        self.points: list[dict[str, Any]] = []
        self.on_point = on_point  # called with the curve so far after each evaluation

    def on_start(self, trainer: Trainer) -> None:
        self.started = time.perf_counter()

    def on_eval(self, trainer: Trainer, metrics: dict[str, Any], sample: str) -> None:
        self.points.append(
            {
                "step": metrics["step"],
                "elapsed_s": round(metrics["elapsed"], 2),
                "wall_s": round(time.perf_counter() - self.started, 2),
                "val_loss": round(metrics["val_loss"], 4),
            }
        )
        if self.on_point:
            self.on_point(self.points)


def tiny_corpus(data: Path, into: Path) -> Path:
    """The first TINY_CHARS characters of train.txt and val.txt, cut at a line end."""
    into.mkdir(parents=True, exist_ok=True)
    for name, n in zip(("train.txt", "val.txt"), TINY_CHARS, strict=True):
        text = (data / name).read_text(encoding="utf-8")[:n]
        (into / name).write_text(text[: text.rfind("\n") + 1], encoding="utf-8")
    return into


def scratch_dir() -> str | None:
    """/dev/shm when it has room, so the checkpoints written at every evaluation (weights and
    optimizer moments: ~350 MB for gpu-fast) do not wait on a disk; else the default temp dir."""
    try:
        return "/dev/shm" if shutil.disk_usage("/dev/shm").free > 8 << 30 else None
    except OSError:
        return None


def build_configs(args: argparse.Namespace) -> tuple[ModelConfig, TrainConfig]:
    preset = PRESETS[args.preset]
    model_over, train_over = split_overrides(args.overrides)
    model = {**preset["model"]}
    train = {**preset["train"]}
    if args.tiny:  # same code path, sizes for a CPU smoke run
        model.update(PRESETS["tiny"]["model"])
        train.update(PRESETS["tiny"]["train"], eval_every=20, log_every=5)
    if args.eval_every is not None:
        train["eval_every"] = args.eval_every
    train.update(max_time=args.budget, sample_tokens=0, device=args.device)
    train.update(train_over)
    model.update(model_over)
    return ModelConfig.from_dict(model), TrainConfig.from_dict(train)


def result_name(args: argparse.Namespace) -> str:
    if args.name:
        return args.name
    return "race_tiny" if args.tiny else f"race_{resolve_device(args.device).type}"


def race(args: argparse.Namespace) -> dict[str, Any]:
    model_cfg, train_cfg = build_configs(args)

    def write_partial(points: list[dict[str, Any]]) -> None:
        """The curve so far, so that a run killed before its end still leaves its figures
        (``write_result`` below replaces it)."""
        best = min(points, key=lambda p: p["val_loss"])
        write_result(
            result_name(args),
            {
                "partial": True,
                "preset": args.preset,
                "budget_s": args.budget,
                "val_loss_nats_per_char": best["val_loss"],
                "best_elapsed_s": best["elapsed_s"],
                "curve": points,
                "model_config": model_cfg.to_dict(),
                "train_config": train_cfg.to_dict(),
            },
        )

    with tempfile.TemporaryDirectory(dir=scratch_dir()) as tmp:
        data = tiny_corpus(args.data, Path(tmp) / "corpus") if args.tiny else args.data
        run = Path(args.run_dir) if args.run_dir else Path(tmp) / "run"
        t0 = time.perf_counter()
        curve = Curve(write_partial)
        trainer = Trainer.create(
            run,
            [data / "train.txt"],
            train_cfg,
            model_cfg,
            valid=[data / "val.txt"],
            callbacks=[curve],
        )
        setup = time.perf_counter() - t0
        t0 = time.perf_counter()
        summary = trainer.fit()  # periodic full passes over val.txt, and one at the end
        wall = time.perf_counter() - t0
    best = min(curve.points, key=lambda p: p["val_loss"]) if curve.points else None
    kind = trainer.device.type
    tokens = trainer.tokens_seen()
    return {
        "corpus": "tiny-shakespeare train.txt / val.txt" + (" (--tiny: truncated)" * args.tiny),
        "preset": args.preset,
        "device": str(trainer.device),
        "precision": trainer.precision,
        "budget_s": args.budget,
        "train_seconds": round(summary["elapsed"], 1),
        "wall_seconds_incl_eval": round(wall, 1),
        "setup_seconds": round(setup, 1),
        "steps": summary["step"],
        "epochs": round(summary["epoch"], 3),
        "tokens": tokens,
        "tokens_per_s": round(tokens / max(summary["elapsed"], 1e-9)),
        "val_loss_nats_per_char": round(summary["best_val_loss"], 4),
        "best_step": summary["best_step"],
        "best_elapsed_s": best["elapsed_s"] if best else None,
        "best_wall_s": best["wall_s"] if best else None,
        "final_val_loss": curve.points[-1]["val_loss"] if curve.points else None,
        "evaluations": len(curve.points),
        "curve": curve.points,
        "parameters": trainer.model.num_parameters(),
        "model_config": trainer.model.config.to_dict(),
        "train_config": trainer.config.to_dict(),
        "reference": REFERENCES.get(kind, REFERENCES["cpu"]),
        "reference_seconds": REFERENCE_SECONDS.get(kind, REFERENCE_SECONDS["cpu"]),
    }


def markdown(r: dict) -> str:
    """The README table for a result of this benchmark (benchmarks/render_readme.py can use it)."""
    m, t = r["model_config"], r["train_config"]
    if r.get("partial"):  # killed before the end: only the evaluations it got to
        return (
            f"_Incomplete run (stopped before the end of its {r['budget_s']:.0f} s budget): best "
            f"validation loss {r['val_loss_nats_per_char']:.4f} after {r['best_elapsed_s']:.0f} "
            f"s of training, `--preset {r['preset']}` ({m['num_layers']}x{m['hidden_size']} "
            f"{m['cell']}); {measured(r)}._"
        )
    arch = m.get("arch", "recurrent")
    if arch != "recurrent":  # e.g. `arch=sha-lstm` on the command line (issue 12)
        arch = (
            f"`arch={arch}`, memory {m.get('memory')}, attention layer {m.get('attention_layer')}, "
        )
    rows = [
        "| run | best validation loss (nats/char) | reached after |",
        "|---|---|---|",
        f"| lstmgen `--preset {r['preset']}` ({arch if arch != 'recurrent' else ''}"
        f"`{m['cell']}` {m['num_layers']}x{m['hidden_size']}, "
        f"embedding {m['embedding_size']}, dropout {m['dropout']}, batch {t['batch_size']}x"
        f"{t['seq_len']}, lr {t['lr']}, weight decay {t['weight_decay']}, {r['precision']}, "
        f"{r['parameters']:,} parameters, {r['steps']:,} steps, {r['epochs']:.1f} epochs) "
        f"| **{r['val_loss_nats_per_char']:.4f}** "
        f"| {r['best_elapsed_s']:.0f} s of training ({r['best_wall_s']:.0f} s wall) |",
    ]
    for name, loss in r["reference"].items():
        seconds = r.get("reference_seconds", {}).get(name)
        rows.append(f"| {name} (reference) | {loss} | {f'{seconds} s' if seconds else ''} |")
    return "\n".join(rows) + (
        f"\n\nBudget {r['budget_s']:.0f} s of training ({r['wall_seconds_incl_eval']:.0f} s wall "
        f"with {r['evaluations']} full validation passes and checkpoints), "
        f"{r['tokens_per_s']:,} tokens/s; {measured(r)}. Every character of `val.txt` is scored "
        "once, "
        "statefully (16 contiguous streams, each warmed up on the 256 characters before it)."
    )


def parser(defaults: dict[str, Any] | None = None, doc: str = __doc__) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="ModelConfig/TrainConfig field=value")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="gpu-fast")
    ap.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu, cuda:N")
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of training")
    ap.add_argument("--eval-every", type=int, help="steps between evaluations [the preset's]")
    ap.add_argument("--name", help="result file name [race_<cuda|cpu>, race_tiny with --tiny]")
    ap.add_argument("--out-dir", help="where the JSON goes [$LSTMGEN_RESULTS_DIR or results/]")
    ap.add_argument("--run-dir", help="keep the run here (best model included)")
    data_root = Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA)
    ap.add_argument("--data", type=Path, default=data_root / "tiny-shakespeare")
    ap.add_argument("--tiny", action="store_true", help="tiny model and corpus: a CPU smoke run")
    ap.set_defaults(**(defaults or {}))
    return ap


def main(
    argv: list[str] | None = None, defaults: dict[str, Any] | None = None, doc: str = __doc__
) -> None:
    args = parser(defaults, doc).parse_args(argv)
    if args.out_dir:
        os.environ["LSTMGEN_RESULTS_DIR"] = args.out_dir
    try:
        payload = race(args)
    except LstmgenError as exc:
        raise SystemExit(f"error: {exc}") from None
    out = write_result(result_name(args), payload)
    best = payload["val_loss_nats_per_char"]
    when = payload["best_elapsed_s"]
    print(
        f"best val loss {best} (at {when}s of training, {payload['best_wall_s']}s wall) after "
        f"{payload['train_seconds']}s ({payload['steps']} steps, {payload['epochs']} epochs, "
        f"{payload['tokens_per_s']:,} tokens/s; {payload['wall_seconds_incl_eval']}s wall) -> {out}"
    )
    if not math.isfinite(best):
        raise SystemExit("no evaluation ran")


if __name__ == "__main__":
    main()
