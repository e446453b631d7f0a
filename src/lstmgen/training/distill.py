"""Knowledge distillation (Hinton et al. 2015): a smaller student trained on a teacher's soft
targets, mixed with the usual cross-entropy on the text.

Dimensions: B batch, T time, V vocabulary (the teacher's: the student shares its tokenizer).

  loss = alpha * tau^2 * KL(softmax(teacher / tau) || softmax(student / tau))
       + (1 - alpha) * CE(student, next tokens)

tau^2 keeps the soft term's gradients the size of the hard term's as tau grows (Hinton et al.,
section 2). The teacher runs in eval mode on the same windows, its own state carried between
windows like the student's. The student is an ordinary run directory; the reported training
loss is the student's cross-entropy, so it compares with any other run's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ..config import ModelConfig, TrainConfig
from ..errors import ConfigError
from ..model import LanguageModel
from ..state import State
from .optim import clip_gradients
from .trainer import SINGLE_WINDOW_STEP, Trainer


class DistillTrainer(Trainer):
    """``Trainer`` with a teacher: ``train_step`` mixes KL on soft targets with cross-entropy."""

    step_lacks = SINGLE_WINDOW_STEP  # its train_step is its own

    teacher: LanguageModel
    kd_temperature: float = 2.0
    kd_alpha: float = 0.5
    teacher_hidden: State | None = None

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.hidden is None:  # a new epoch (or the first window): both states start over
            self.teacher_hidden = None
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr_at()
        tau, alpha = self.kd_temperature, self.kd_alpha
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast):
            with torch.no_grad():
                soft, teacher_hidden = self.teacher(x, self.teacher_hidden)  # (B, T, V)
            logits, hidden = self.model(x, self.hidden)  # (B, T, V)
            V = logits.shape[-1]
            student = logits.float().reshape(-1, V)  # (B*T, V)
            ce = F.cross_entropy(student, y.reshape(-1))
            kl = F.kl_div(
                F.log_softmax(student / tau, dim=-1),
                F.log_softmax(soft.float().reshape(-1, V) / tau, dim=-1),
                log_target=True,
                reduction="batchmean",
            )
            loss = alpha * tau * tau * kl + (1 - alpha) * ce
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            clip_gradients(self.model, self.config.grad_clip)
        self.optimizer.step()
        self.hidden = hidden.detach()
        self.teacher_hidden = teacher_hidden.detach()
        return ce.detach()


def check_tokenizer(teacher: LanguageModel, config: TrainConfig, given: set[str]) -> None:
    """The student's tokens are the teacher's: a different tokenizer asked for is an error
    (the soft targets are distributions over the teacher's vocabulary)."""
    tok = teacher.tokenizer
    if "tokenizer" in given and config.tokenizer != tok.kind:
        raise ConfigError(
            f"the student must use the teacher's tokenizer ({tok.kind}, {tok.vocab_size:,}"
            f" tokens), not {config.tokenizer}: drop --tokenizer"
        )
    if "vocab_size" in given and config.vocab_size != tok.vocab_size:
        raise ConfigError(
            f"the student must use the teacher's vocabulary ({tok.vocab_size:,} tokens), not"
            f" {config.vocab_size:,}: drop --vocab-size"
        )


def distill(
    teacher_dir: str | Path,
    train: list[str],
    out_dir: str | Path,
    model_config: ModelConfig,
    config: TrainConfig,
    kd_temperature: float,
    kd_alpha: float,
    given: set[str] = frozenset(),  # type: ignore[assignment]
    callbacks: Any = (),
) -> dict[str, Any]:
    """Train the student ``model_config`` in ``out_dir`` on ``teacher_dir``'s soft targets."""
    if not kd_temperature > 0:
        raise ConfigError(f"--kd-temperature must be > 0, got {kd_temperature}")
    if not 0 <= kd_alpha <= 1:
        raise ConfigError(f"--kd-alpha must be in [0, 1], got {kd_alpha}")
    from ..runtime import resolve_device

    teacher = LanguageModel.from_pretrained(teacher_dir, device=resolve_device(config.device))
    if teacher.int8 is not None:
        raise ConfigError(f"{teacher_dir} is int8: distill from the float32 model")
    check_tokenizer(teacher, config, given)
    config = config.replace(tokenizer=teacher.tokenizer.kind)
    trainer = DistillTrainer.create(
        out_dir, train, config, model_config, callbacks=callbacks, tokenizer=teacher.tokenizer
    )
    trainer.teacher = teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    trainer.kd_temperature, trainer.kd_alpha = kd_temperature, kd_alpha
    return trainer.fit()
