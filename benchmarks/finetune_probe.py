"""One step-budgeted fine-tuning (or from-scratch) run, for the issue #13 investigation of
small-data defaults: its settings in, one JSON line out (appended to ``--log``).

Counted in steps, so machine load changes the seconds but not the losses. The investigation
behind ``config.FINETUNE_DEFAULTS`` ran these (a 2x128 byte LSTM; bases of 2,500 steps on
WikiText-2, tokenized or detokenized by ``--detokenize``; 600 steps on 100 KB or 25 KB of
tiny-shakespeare; ``benchmarks/results/finetune_probe.json`` holds the lines):

    python benchmarks/finetune_probe.py base_tok --hidden 128 --steps 2500 --evals 5 \\
        --src ../shared/data/wikitext-2/wiki.train.tokens \\
        --valid ../shared/data/wikitext-2/wiki.valid.tokens --max-tokens 50000
    python benchmarks/finetune_probe.py ft --init RUNS/base_tok --steps 600 \\
        --src slice.txt --settings '{"lr_layer_decay": 2.6, "warmup_steps": 20, "lr": 0.003}'
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import time
from pathlib import Path

import torch
from common import SHARED_DATA
from finetune import train

from lstmgen import ModelConfig, TrainConfig
from lstmgen.model import load_model


def detokenize(text: str) -> str:
    """WikiText's tokenized v1 text as raw-looking text: ``@-@`` joins, no space before
    closing punctuation, ``<unk>`` dropped (the investigation's "raw" base)."""
    text = text.replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", ".")
    text = re.sub(r" ([.,;:!?)\]}'])", r"\1", text)
    text = re.sub(r"([(\[{]) ", r"\1", text).replace(" n't", "n't").replace(" 's", "'s")
    text = re.sub(r'" (.*?) "', r'"\1"', text).replace("<unk>", "")
    return re.sub(r"\n{2,}", "\n\n", re.sub(r"\n +", "\n", re.sub(r"  +", " ", text)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("name")
    p.add_argument("--init", default="", help="the base model directory (none: from scratch)")
    p.add_argument("--src", type=Path, required=True)
    p.add_argument("--valid", type=Path, default=SHARED_DATA / "tiny-shakespeare" / "val.txt")
    p.add_argument("--detokenize", action="store_true", help="train on detokenize(src, valid)")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--settings", default="{}", help="TrainConfig fields as JSON")
    p.add_argument(
        "--regularisers", default="{}", help="config.REGULARISERS as JSON (AWD's weight_drop...)"
    )
    p.add_argument("--evals", type=int, default=6, help="curve points")
    p.add_argument("--max-tokens", type=int, default=0, help="final validation tokens (0 all)")
    p.add_argument("--runs", type=Path, default=Path("/tmp/finetune_probe"))
    p.add_argument("--log", type=Path, default=Path("/tmp/finetune_probe/results.jsonl"))
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = a.runs / a.name
    shutil.rmtree(out, ignore_errors=True)
    src, valid = a.src, a.valid
    if a.detokenize:
        a.runs.mkdir(parents=True, exist_ok=True)
        for f in (src, valid):
            (a.runs / f"{a.name}.{f.name}.txt").write_text(detokenize(f.read_text("utf-8")))
        src, valid = (a.runs / f"{a.name}.{f.name}.txt" for f in (src, valid))
    settings = json.loads(a.settings)
    regularisers = json.loads(a.regularisers)
    cfg = TrainConfig(
        **{
            "tokenizer": "byte",
            "device": "cpu",
            "sample_tokens": 0,
            "eval_tokens": 20000,
            "max_steps": a.steps,
            "eval_every": max(1, a.steps // a.evals),
            **settings,
        }
    )
    if a.init:
        model_cfg = load_model(a.init).config.replace(dropout=a.dropout, **regularisers)
    else:
        model_cfg = ModelConfig(
            hidden_size=a.hidden, num_layers=2, embedding_size=64, dropout=a.dropout, **regularisers
        )
    began = time.time()
    init = Path(a.init) if a.init else None
    r = train(out, [src], [valid], cfg, model_cfg, init_from=init, max_tokens=a.max_tokens)
    r.update(name=a.name, settings=settings, dropout=a.dropout, init=a.init, source=str(a.src))
    r.update(regularisers=regularisers)
    r["curve"] = [(c["step"], c["val_loss"]) for c in r["curve"]]
    r["wall"] = round(time.time() - began, 1)
    a.log.parent.mkdir(parents=True, exist_ok=True)
    with a.log.open("a") as f:
        f.write(json.dumps(r) + "\n")
    print(a.name, r["val_loss"], r["curve"], file=sys.stderr)


if __name__ == "__main__":
    main()
