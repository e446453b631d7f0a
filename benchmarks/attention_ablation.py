"""Each SHA-RNN choice of the sha-lstm measured on its own (issue #12, "measure each choice").

Step-budgeted, so load-independent: every setting trains the cpu-small preset (2x384, batch
16x64, lr 0.011) for the same number of steps on tiny-shakespeare (same seed, same windows,
the cosine schedule over those steps), then scores the whole of val.txt statefully
(nats/char). A setting is the default sha-lstm with one thing changed:

- ``no_layernorm``: the head's LayerNorm(s) replaced by a learned per-dimension affine map
  (same parameter names, no normalisation), so the memory stores the raw LSTM outputs;
- ``no_gates``: the key/value gates fixed open (k_j = v_j = n_j; sigmoid(30) = 1, not trained);
- ``boom``: the feed-forward "boom" sublayer on (``boom_size`` 2H);
- ``memory_64`` / ``memory_2048``: the memory length (default 512);
- ``lstm``: the plain LSTM of the same preset, for reference.

Settings run two at a time (``common.side_by_side``: one core, one torch thread each); the
figures depend only on the step count, not on the machine's load.

    python benchmarks/attention_ablation.py             # 400 steps, ~10 min on 2 quiet cores
    python benchmarks/attention_ablation.py --steps 20 --tiny --name attention_ablation_smoke
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from common import SHARED_DATA, side_by_side, side_by_side_note, write_result

# name -> (ModelConfig overrides, what is patched into the head after it is built)
SETTINGS: dict[str, tuple[dict, str | None]] = {
    "sha-lstm": ({"arch": "sha-lstm"}, None),
    "lstm": ({}, None),
    "no_layernorm": ({"arch": "sha-lstm"}, "no_layernorm"),
    "no_gates": ({"arch": "sha-lstm"}, "no_gates"),
    "boom": ({"arch": "sha-lstm", "boom_size": 768}, None),
    "memory_64": ({"arch": "sha-lstm", "memory": 64}, None),
    "memory_2048": ({"arch": "sha-lstm", "memory": 2048}, None),
}


def _patch(variant: str | None) -> None:
    """Make the next sha-lstm built carry ``variant`` (in this process: each setting runs in
    its own spawned one)."""
    if variant is None:
        return
    import torch
    from torch import nn

    from lstmgen.models import attention

    class Affine(nn.Module):
        """LayerNorm's parameters without the normalisation: x * weight + bias."""

        def __init__(self, H: int) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.ones(H))
            self.bias = nn.Parameter(torch.zeros(H))

        def reset_parameters(self) -> None:
            nn.init.ones_(self.weight)
            nn.init.zeros_(self.bias)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * self.weight + self.bias

    build = attention.ShaLstm.build

    def patched(self, model: nn.Module) -> None:
        build(self, model)
        att = model.attention
        if variant == "no_layernorm":
            H = model.config.hidden_size
            att.norm = Affine(H)
            if att.ff_norm is not None:
                att.ff_norm = Affine(H)
        elif variant == "no_gates":
            with torch.no_grad():
                att.key_gate.fill_(30.0)
                att.value_gate.fill_(30.0)
            att.key_gate.requires_grad_(False)  # no gradient: AdamW leaves it as it is
            att.value_gate.requires_grad_(False)
        else:
            raise ValueError(variant)

    attention.ShaLstm.build = patched


def run_setting(name: str, steps: int, data: str, tiny: bool, seed: int) -> dict:
    """Train one setting for ``steps`` steps and score val.txt (runs in a pinned child)."""
    from race import tiny_corpus

    from lstmgen import ModelConfig, TrainConfig, Trainer
    from lstmgen.config import PRESETS

    model_over, variant = SETTINGS[name]
    model = {**PRESETS["cpu-small"]["model"], **model_over}
    train = {**PRESETS["cpu-small"]["train"]}
    if tiny:
        model.update(PRESETS["tiny"]["model"])
        train.update(PRESETS["tiny"]["train"])
    train.update(
        max_steps=steps, max_time=0, eval_every=10**9, sample_tokens=0, device="cpu", seed=seed
    )
    _patch(variant)
    with tempfile.TemporaryDirectory() as tmp:
        src = tiny_corpus(Path(data), Path(tmp) / "corpus") if tiny else Path(data)
        trainer = Trainer.create(
            Path(tmp) / "run",
            [src / "train.txt"],
            TrainConfig.from_dict(train),
            ModelConfig.from_dict(model),
            valid=[src / "val.txt"],
        )
        t0 = time.perf_counter()
        summary = trainer.fit()
        wall = time.perf_counter() - t0
    return {
        "setting": name,
        "variant": variant,
        "steps": summary["step"],
        "val_loss_nats_per_char": round(summary["best_val_loss"], 4),
        "parameters": trainer.model.num_parameters(),
        "tokens_per_s_one_core": round(trainer.tokens_seen() / max(summary["elapsed"], 1e-9)),
        "wall_s": round(wall, 1),
        "model_config": trainer.model.config.to_dict(),
    }


def write(args: argparse.Namespace, results: list[dict], partial: bool):
    base = next((r for r in results if r["setting"] == "sha-lstm"), None)
    for r in results:
        if base is not None:
            diff = r["val_loss_nats_per_char"] - base["val_loss_nats_per_char"]
            r["minus_sha_lstm"] = round(diff, 4)
    return write_result(
        args.name,
        {
            "partial": partial,
            "steps": args.steps,
            "seed": args.seed,
            "preset": "tiny" if args.tiny else "cpu-small",
            "results": results,
            "notes": "step-budgeted (load-independent): the same steps, windows and seed for "
            "every setting; one seed, so differences of ~0.01 nats/char are within noise. "
            + side_by_side_note,
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--steps", type=int, default=400, help="training steps per setting")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names")
    ap.add_argument("--seed", type=int, default=1337)
    ap.add_argument("--tiny", action="store_true", help="tiny model and corpus: a smoke run")
    ap.add_argument("--name", default="attention_ablation")
    data_root = Path(os.environ.get("LSTMGEN_DATA_DIR") or SHARED_DATA)
    ap.add_argument("--data", type=Path, default=data_root / "tiny-shakespeare")
    args = ap.parse_args()
    names = [n for n in args.settings.split(",") if n]
    unknown = [n for n in names if n not in SETTINGS]
    if unknown:
        raise SystemExit(f"error: unknown setting(s) {unknown}; known: {', '.join(SETTINGS)}")
    cores = len(os.sched_getaffinity(0))
    results: list[dict] = []
    for i in range(0, len(names), cores):
        jobs = [
            (run_setting, {"name": n, "steps": args.steps, "data": str(args.data),
                           "tiny": args.tiny, "seed": args.seed})
            for n in names[i : i + cores]
        ]  # fmt: skip
        for r in side_by_side(jobs):
            print(f"{r['setting']}: {r['val_loss_nats_per_char']} nats/char", flush=True)
            results.append(r)
        # after every pair, so that a run stopped early leaves what it measured
        out = write(args, results, partial=i + cores < len(names))
    print(f"-> {out}")


def markdown(r: dict) -> str:
    """The table of this result (docs/README; benchmarks/render_readme.py)."""
    lines = [
        "| setting | val loss (nats/char) | vs sha-lstm | parameters |",
        "|---|---|---|---|",
    ]
    for x in r["results"]:
        lines.append(
            f"| {x['setting']} | {x['val_loss_nats_per_char']:.4f} | "
            f"{x.get('minus_sha_lstm', 0):+.4f} | {x['parameters']:,} |"
        )
    lines.append(f"\nAfter {r['steps']} steps of `--preset {r['preset']}`, seed {r['seed']}.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
