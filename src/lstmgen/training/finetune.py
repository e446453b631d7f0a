"""Fine-tuning: a run that starts from a trained model directory, and ULMFiT's tools.

Howard & Ruder 2018 (ULMFiT): pretrain a language model on a large corpus, then fine-tune it
on the target text with discriminative learning rates (each layer group from the top learns
``lr_layer_decay`` times slower than the one above), gradual unfreezing (the top group first,
one more every ``unfreeze_every`` steps) and a short warmup then decay (the run's own
schedule, training/schedule.py; the CLI's fine-tuning default warmup is
``config.FINETUNE_DEFAULTS``).

- ``Base.open(path)`` reads the base model through the normal loader (any architecture of the
  registry), so a missing, foreign or corrupt directory is one ``CheckpointError``.
- ``Base.model_config`` is the base's architecture and sizes; a different size asked for is a
  ``ConfigError`` (only the regularisers, ``config.REGULARISERS``: dropout and AWD's, may
  change: they act in training only).
- ``Base.init`` copies the base's weights into the new model; a char or word vocabulary that
  grew (tokenizers.extend_tokenizer appends the new corpus's unseen tokens, so base ids keep
  their rows) gets new embedding and decoder rows at the mean of the base's rows (ULMFiT's
  initialisation of new words). Tied weights stay tied: the decoder's matrix is the embedding.
- ``layer_groups`` / ``param_groups`` / ``set_group_lrs``: the optimizer groups by layer,
  found by parameter name (``nn.LSTM`` holds every layer in one module: ``rnn.weight_ih_l{k}``).

Frozen groups are trained at lr 0 with their gradients zeroed (not left out of the optimizer):
every parameter keeps its AdamW moments, so the trainer state has the same tensors at every
step and a resumed run unfreezes at exactly the same steps.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import load_weights_into, weights_of
from ..config import REGULARISERS, ModelConfig, TrainConfig
from ..errors import CheckpointError, ConfigError
from ..model import LanguageModel, load_model
from ..provenance import base_record
from ..rundir import RunDir
from ..tokenizers import Tokenizer

# Rows indexed by token id, extended when the vocabulary grows (names of the state dict).
VOCAB_ROWS = ("embedding.weight", "decoder.weight", "decoder.bias")
# Settings of the base that a fine-tuning run keeps; the regularisers and vocab_size may differ.
FIXED = ("arch", "cell", "embedding_size", "hidden_size", "num_layers", "tie_weights")
FIXED += ("adaptive_cutoffs",)  # the head's clusters (models/adaptive.py)
# `--init-from base` without a folder named base: `make base` writes one here.
DEFAULT_BASE = Path("runs") / "base"
# Layer index in a parameter name: nn.LSTM's rnn.weight_ih_l1, or a ModuleList's layers.1.
_LAYER = re.compile(r"(?:_l(\d+)(?:_reverse)?$)|(?:\.(\d+)\.)")


def resolve_base(path: str | Path) -> Path:
    """``path``, or ``runs/base`` for the name ``base`` when no folder ``base`` exists."""
    path = Path(path)
    if str(path) == "base" and not path.exists():
        if not DEFAULT_BASE.exists():
            raise CheckpointError(
                f"no base model: {DEFAULT_BASE} does not exist (make base trains one; or give "
                "a model directory)"
            )
        return DEFAULT_BASE
    return path


@dataclass
class Base:
    """A base model to fine-tune from: its directory, model and provenance record."""

    path: Path
    model: LanguageModel
    record: dict[str, Any]

    @classmethod
    def open(cls, path: str | Path) -> Base:
        path = resolve_base(path)
        try:
            model = load_model(path)
            record = base_record(path, RunDir(path).read_base())
        except CheckpointError as exc:
            raise CheckpointError(f"cannot start from the base model: {exc}") from None
        return cls(path, model, record)

    @property
    def tokenizer(self) -> Tokenizer:
        return self.model.tokenizer

    def check_config(self, config: TrainConfig) -> TrainConfig:
        """``config`` with the base's tokenizer kind (the vocabulary comes from the base)."""
        return config.replace(tokenizer=self.tokenizer.kind)

    def model_config(self, asked: ModelConfig | None, vocab_size: int) -> ModelConfig:
        """The base's config for ``vocab_size`` tokens (and ``asked``'s regularisers);
        ``asked`` differing from the base in architecture or size is a ``ConfigError``."""
        base = self.model.config
        if asked is None:
            return base.replace(vocab_size=vocab_size)
        if asked.adaptive_cutoffs == "auto":  # a preset's rule: the base's clusters fit it
            asked = dataclasses.replace(asked, adaptive_cutoffs=base.adaptive_cutoffs)
        differ = [k for k in FIXED if getattr(asked, k) != getattr(base, k)]
        if differ:
            shown = ", ".join(f"{k} {getattr(asked, k)} (base: {getattr(base, k)})" for k in differ)
            raise ConfigError(
                f"the base model {self.path} fixes the architecture and sizes: {shown}; leave "
                "them out to use the base's"
            )
        return base.replace(vocab_size=vocab_size, **{k: getattr(asked, k) for k in REGULARISERS})

    def init(self, model: LanguageModel) -> int:
        """Copy the base's weights into ``model`` (same architecture, a vocabulary that starts
        with the base's); return the number of tokens added."""
        weights = weights_of(self.model)
        old, new = self.model.config.vocab_size, model.config.vocab_size
        if new < old:  # extend_tokenizer only appends
            raise ConfigError(f"the vocabulary shrank from {old} to {new} tokens")
        # new tokens are appended: with an adaptive softmax they join its last (rarest)
        # cluster, whose output rows are in id order like the embedding's (models/adaptive.py)
        cuts = self.model.config.adaptive_cutoffs
        rows_by_id = (*VOCAB_ROWS, f"decoder.tail.{len(cuts) - 1}.1.weight") if cuts else VOCAB_ROWS
        with torch.no_grad():
            for name in rows_by_id:
                if name in weights and new > old:
                    rows = weights[name]  # (V, ...)
                    mean = rows.mean(dim=0, keepdim=True).expand(new - old, *rows.shape[1:])
                    weights[name] = torch.cat([rows, mean])  # (V', ...)
        load_weights_into(model, weights, self.path)
        return new - old


# --- ULMFiT's optimizer groups ------------------------------------------------------------------


def uses_layer_groups(config: TrainConfig) -> bool:
    return config.lr_layer_decay != 1.0 or config.unfreeze_every > 0 or config.freeze_embeddings


def layer_groups(model: torch.nn.Module) -> list[list[torch.nn.Parameter]]:
    """The parameters by layer group, top first: [decoder (and projection) + top layer, the
    layer below, ..., the first layer, embedding]. Layers are read from the names
    (``rnn.weight_ih_l{k}``, ``layers.{k}.``); parameters of no layer other than the embedding
    (a decoder, a final norm) join the top group. A tied decoder matrix is the embedding's,
    so it is in the embedding group, as in fastai's AWD-LSTM groups."""
    layered: dict[int, list[torch.nn.Parameter]] = {}
    top: list[torch.nn.Parameter] = []
    embedding: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():  # a tied matrix once, as embedding.weight
        match = _LAYER.search(name)
        if name.startswith("embedding."):
            embedding.append(p)
        elif match:
            layered.setdefault(int(match.group(1) or match.group(2)), []).append(p)
        else:
            top.append(p)
    layers = [layered[k] for k in sorted(layered, reverse=True)]
    if layers:
        layers[0] = top + layers[0]
    else:
        layers = [top]
    return [*layers, embedding] if embedding else layers


def param_groups(model: torch.nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: each layer group split into weight-decay (matrices) and no-decay parts
    (optim.decay_groups), with ``lr_scale`` = ``lr_layer_decay ** -k`` for group k from the
    top and ``layer_group`` = k (what ``set_group_lrs`` freezes by)."""
    groups = []
    for k, params in enumerate(layer_groups(model)):
        scale = config.lr_layer_decay**-k
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        for part, wd in ((decay, config.weight_decay), (no_decay, 0.0)):
            if part:
                groups.append(
                    {"params": part, "weight_decay": wd, "lr_scale": scale, "layer_group": k}
                )
    return groups


def frozen(config: TrainConfig, step: int, group: int, groups: int) -> bool:
    """Whether layer group ``group`` (0 = top) of ``groups`` is frozen at ``step``."""
    if config.freeze_embeddings and group == groups - 1 and groups > 1:
        return True
    return bool(config.unfreeze_every) and group > step // config.unfreeze_every


def set_group_lrs(
    optimizer: torch.optim.Optimizer, lr: float, config: TrainConfig, step: int
) -> list[torch.Tensor]:
    """Set each group's ``lr`` for ``step`` (0 where frozen); return the frozen parameters,
    whose gradients the step zeroes (so that they count nowhere, not even in clipping)."""
    groups = 1 + max((g.get("layer_group", 0) for g in optimizer.param_groups), default=0)
    still: list[torch.Tensor] = []
    for g in optimizer.param_groups:
        k = g.get("layer_group")
        if k is not None and frozen(config, step, k, groups):
            g["lr"] = 0.0
            still += g["params"]
        else:
            g["lr"] = lr * g.get("lr_scale", 1.0)
    return still


def zero_grads(params: list[torch.Tensor]) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if grads:
        torch._foreach_zero_(grads)
