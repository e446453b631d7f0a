"""``lstmgen info``: what a model directory holds."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import click

from .. import provenance
from ..errors import CheckpointError
from ..files import check_regular_file, parse_json
from ..modeldir import read_quantization
from ..rundir import RunDir
from .common import run_argument


def _position(run: Path) -> dict[str, Any] | None:
    """Where training stands, from the trainer state's metadata (header only, no tensors).
    metrics.jsonl lags it: it logs every few steps, and Ctrl-C saves between two logs."""
    from safetensors import SafetensorError, safe_open

    path = RunDir(run).state_file
    if not path.exists():
        return None  # a plain model directory
    check_regular_file(path)  # a FIFO would block safe_open forever
    try:
        with safe_open(str(path), "numpy") as f:
            pos = parse_json((f.metadata() or {})["position"], path)
    except (SafetensorError, OSError, KeyError, TypeError, ValueError, CheckpointError):
        return None  # a state that resume would refuse anyway
    if not isinstance(pos, dict):
        return None
    numbers = (pos.get("step"), pos.get("elapsed"))
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in numbers):
        return None
    return pos


@click.command("info")
@run_argument
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def info_command(run: str, as_json: bool) -> None:
    """Show the config, parameter count, tokenizer and training history of RUN."""
    from ..model import LanguageModel

    model = LanguageModel.from_pretrained(run)
    tok = model.tokenizer
    train_cfg = None
    run_dir = RunDir(run)
    if run_dir.has_config():
        config, sources = run_dir.read_config()
        train_cfg = {**config.to_dict(), "sources": sources}
    rows = run_dir.read_metrics()
    evals = [r for r in rows if "val_loss" in r]
    logs = [r for r in rows if "train_loss" in r]
    pos = _position(Path(run)) or {}
    history = {
        "steps": pos.get("step", max((r["step"] for r in rows), default=0)),
        "evaluations": len(evals),
        "best_val_loss": min((r["val_loss"] for r in evals), default=None),
        "last_train_loss": logs[-1]["train_loss"] if logs else None,
        "training_seconds": pos.get("elapsed", max((r.get("elapsed", 0) for r in rows), default=0)),
    }
    base_chain = provenance.chain(run_dir.read_base())  # nearest base first
    for record in base_chain:
        why = provenance.changed(record)
        if why:
            warnings.warn(f"base model {record['path']}: {why}", stacklevel=1)
    counts = run_dir.read_labels().get("train", {})
    labels = {name: counts.get(name) for name in tok.labels}  # documents per label (or None)
    info = {
        "path": str(run),
        "model": model.config.to_dict(),
        "parameters": model.num_parameters(),
        "quantization": read_quantization(run),
        "tokenizer": {"type": tok.kind, "vocab_size": tok.vocab_size},
        "labels": labels,
        "feature_size": model.config.feature_size,
        "generation": model.generation_config.to_dict(),
        "training": train_cfg,
        "history": history,
        "base_chain": base_chain,
    }
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False))
        return
    m = model.config
    click.echo(
        f"{run}: {m.cell.upper()} {m.num_layers}x{m.hidden_size}, embedding "
        f"{m.embedding_size}, dropout {m.dropout}, tied {m.tie_weights}"
    )
    if m.arch == "sha-lstm":
        click.echo(
            f"arch:       sha-lstm, memory {m.memory:,} tokens, attention after layer "
            f"{m.attention_layer % m.num_layers}, boom size {m.boom_size}"
        )
    else:
        click.echo(f"arch:       {m.arch}")
    if m.adaptive_cutoffs:
        cuts = ", ".join(f"{c:,}" for c in m.adaptive_cutoffs)
        tied = ", tied to the embedding" if m.tie_weights else ""
        click.echo(
            f"decoder:    adaptive softmax, cutoffs {cuts} (of {m.vocab_size:,} tokens){tied}"
        )
    click.echo(f"parameters: {info['parameters']:,}")
    if info["quantization"]:
        q = info["quantization"]
        click.echo(f"weights:    {q['method']} ({len(q['weights'])} matrices), {q.get('scheme')}")
    click.echo(f"tokenizer:  {tok.kind}, {tok.vocab_size:,} tokens")
    if labels:
        shown = ", ".join(f"{k} ({'?' if n is None else n})" for k, n in labels.items())
        click.echo(f"labels:     {shown} documents")
    if model.config.feature_size:
        click.echo(f"features:   vectors of {model.config.feature_size} (generate --features)")
    if train_cfg:
        keys = ("batch_size", "seq_len", "lr", "max_steps", "epochs", "max_time", "seed")
        click.echo("training:   " + ", ".join(f"{k}={train_cfg.get(k)}" for k in keys))
    for i, record in enumerate(base_chain):  # run <- base <- its base ...
        label = "base:      " if i == 0 else "  from:    "
        click.echo(f"{label} {record['path']} (sha256 {record['sha256'][:12]})")
    if base_chain and train_cfg:
        keys = ("lr_layer_decay", "unfreeze_every", "freeze_embeddings", "warmup_steps")
        click.echo("fine-tune:  " + ", ".join(f"{k}={train_cfg.get(k)}" for k in keys))
    h = history
    best = f"{h['best_val_loss']:.4f}" if h["best_val_loss"] is not None else "-"
    click.echo(
        f"history:    {h['steps']} steps, {h['evaluations']} evaluations, best val loss "
        f"{best}, {h['training_seconds']:.0f}s of training"
    )
