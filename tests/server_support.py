"""Shared by the server tests: a tiny model trained on a play plus a little Chinese verse."""

from __future__ import annotations

from pathlib import Path

from conftest import TINY_MODEL, TINY_TRAIN, make_play
from lstmgen import ModelConfig, TrainConfig, Trainer

CJK = "床前明月光，疑是地上霜。\n举头望明月，低头思故乡。\n"


def train_server_model(out_dir: Path) -> Path:
    """Train for a few steps (seconds): enough for real, prompt-dependent text."""
    corpus = out_dir.parent / f"{out_dir.name}-corpus.txt"
    corpus.write_text(make_play(200) + "\n" + CJK * 20, encoding="utf-8")
    train = {**TINY_TRAIN, "eval_every": 30, "max_steps": 30}
    Trainer.create(out_dir, [corpus], TrainConfig(**train), ModelConfig(**TINY_MODEL)).fit()
    return out_dir
