"""Which fine-tuning defaults? ULMFiT's tools compared at a fixed number of steps (issue #13).

Counted in steps, not seconds, so the comparison holds on a busy machine: one byte-level base
pretrained on WikiText-2 for ``--base-steps``, then ``--steps`` of fine-tuning on the first
``--slice-kb`` KB of tiny-shakespeare ``train.txt`` for each variant (the ordinary defaults;
a short warmup; ``--lr-layer-decay 2.6``; lr 3e-3 with and without it; gradual unfreezing;
frozen embeddings; from scratch). Reported per variant: the loss on ``val.txt`` (first
``--eval-tokens`` bytes) and on WikiText-2's validation text (forgetting).
``config.FINETUNE_DEFAULTS`` comes from this and from ``finetune_probe.py``.

    python benchmarks/finetune_defaults.py                       # a few minutes on 2 cores
    python benchmarks/finetune_defaults.py --base-steps 20 --steps 10 --hidden-size 16
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from common import SHARED_DATA, write_result
from finetune import base_corpus_loss, train

from lstmgen import ModelConfig, TrainConfig


def variants(steps: int) -> dict[str, dict[str, Any]]:
    quarter = max(1, steps // 4)
    return {
        "plain (warmup 100)": {},
        "warmup 20": {"warmup_steps": 20},
        "decay 2.6, warmup 20": {"warmup_steps": 20, "lr_layer_decay": 2.6},
        "decay 2.6, warmup 20, unfreeze": {
            "warmup_steps": 20,
            "lr_layer_decay": 2.6,
            "unfreeze_every": quarter,
        },
        "lr 3e-3, decay 2.6, warmup 20 (FINETUNE_DEFAULTS)": {
            "warmup_steps": 20,
            "lr_layer_decay": 2.6,
            "lr": 3e-3,
        },
        "lr 3e-3, warmup 20": {"warmup_steps": 20, "lr": 3e-3},
        "decay 2.6, warmup 20, frozen embeddings": {
            "warmup_steps": 20,
            "lr_layer_decay": 2.6,
            "freeze_embeddings": True,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--base-steps", type=int, default=600)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--slice-kb", type=int, default=100)
    p.add_argument("--hidden-size", type=int, default=128)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--embedding-size", type=int, default=64)
    p.add_argument("--eval-tokens", type=int, default=20000)
    p.add_argument("--data", type=Path, default=SHARED_DATA)
    p.add_argument("--name", default="finetune_defaults")
    args = p.parse_args()
    wiki, shakespeare = args.data / "wikitext-2", args.data / "tiny-shakespeare"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        piece = work / "slice.txt"
        piece.write_bytes((shakespeare / "train.txt").read_bytes()[: args.slice_kb * 1000])
        common = {
            "tokenizer": "byte",
            "device": "cpu",
            "sample_tokens": 0,
            "eval_tokens": args.eval_tokens,
        }
        model_cfg = ModelConfig(
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            embedding_size=args.embedding_size,
        )
        base_cfg = TrainConfig(**common, max_steps=args.base_steps, eval_every=args.base_steps)
        results: dict[str, Any] = {
            "base": train(
                work / "base",
                [wiki / "wiki.train.tokens"],
                [wiki / "wiki.valid.tokens"],
                base_cfg,
                model_cfg,
                max_tokens=args.eval_tokens,
            )
        }
        valid = [shakespeare / "val.txt"]
        ft = {**common, "max_steps": args.steps, "eval_every": args.steps}
        for i, (name, extra) in enumerate({**variants(args.steps), "scratch": {}}.items()):
            run = work / f"run{i}"
            init = None if name == "scratch" else work / "base"
            r = train(
                run,
                [piece],
                valid,
                TrainConfig(**ft, **extra),
                model_cfg if init is None else None,
                init_from=init,
                max_tokens=args.eval_tokens,
            )
            r["settings"] = extra
            r["base_corpus_val_loss"] = base_corpus_loss(
                run, wiki / "wiki.valid.tokens", work, args.eval_tokens
            )
            results[name] = r
            print(
                f"{name}: val {r['val_loss']:.4f}, base corpus {r['base_corpus_val_loss']:.4f}",
                flush=True,
            )
        for r in results.values():
            r.pop("curve", None)  # one evaluation each: the final one
        out = write_result(
            args.name,
            {
                "settings": {
                    k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                },
                "runs": results,
                "notes": "Counted in steps, so machine load changes the seconds but not the "
                "losses; seconds were measured with other jobs on the 2 cores (noisy).",
            },
        )
        print(f"-> {out}")


if __name__ == "__main__":
    main()
