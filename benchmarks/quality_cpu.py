"""Time-to-quality on tiny-shakespeare (nanoGPT's split) on CPU.

Trains the default configuration (TrainConfig()/ModelConfig() defaults, i.e. the cpu-small
preset) for a fixed wall-clock budget, then scores the whole validation text in one stateful
pass and reports the loss in nats/char. Overrides (for tuning) as key=value arguments:

    python benchmarks/quality_cpu.py                      # the default, 190 s
    python benchmarks/quality_cpu.py hidden_size=384 lr=4e-3 --name trial
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import SHARED_DATA, write_result

from lstmgen import ModelConfig, TrainConfig, Trainer


def parse_value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("overrides", nargs="*", help="ModelConfig/TrainConfig field=value")
    ap.add_argument("--budget", type=float, default=190.0, help="seconds of training")
    ap.add_argument("--name", default="quality_cpu", help="result file name")
    ap.add_argument("--data", type=Path, default=SHARED_DATA / "tiny-shakespeare")
    args = ap.parse_args()
    model_fields = set(ModelConfig.__dataclass_fields__)
    over = dict(kv.split("=", 1) for kv in args.overrides)
    model_over = {k: parse_value(v) for k, v in over.items() if k in model_fields}
    train_over = {k: parse_value(v) for k, v in over.items() if k not in model_fields}
    train_cfg = TrainConfig(
        max_time=args.budget, eval_every=10**9, sample_tokens=0, device="cpu", **train_over
    )
    model_cfg = ModelConfig(**model_over)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer.create(
            tmp, [args.data / "train.txt"], train_cfg, model_cfg, valid=[args.data / "val.txt"]
        )
        t0 = time.perf_counter()
        summary = trainer.fit()  # ends with a full stateful pass over val.txt
        wall = time.perf_counter() - t0
    payload = {
        "corpus": "tiny-shakespeare train.txt / val.txt",
        "budget_s": args.budget,
        "train_seconds": round(summary["elapsed"], 1),
        "wall_seconds_incl_eval": round(wall, 1),
        "steps": summary["step"],
        "epochs": round(summary["epoch"], 3),
        "val_loss_nats_per_char": round(summary["best_val_loss"], 4),
        "parameters": trainer.model.num_parameters(),
        "model_config": trainer.model.config.to_dict(),
        "train_config": trainer.config.to_dict(),
        "reference": {"nanoGPT CPU recipe": 1.886, "plain 2x256 LSTM": 1.725},
    }
    out = write_result(args.name, payload)
    print(
        f"val loss {payload['val_loss_nats_per_char']} after {payload['train_seconds']}s "
        f"({payload['steps']} steps, {payload['epochs']} epochs) -> {out}"
    )


if __name__ == "__main__":
    main()
