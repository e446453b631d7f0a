"""The optimizer side of a training step: parameter groups, AdamW, gradient clipping.

``Trainer.param_groups`` and ``Trainer.configure_optimizer`` call these; a fine-tuning run
overrides those methods (freeze the embedding, give the decoder its own learning rate) instead
of editing the loop.
"""

from __future__ import annotations

from typing import Any

import torch

from ..config import TrainConfig
from ..runtime import fused_adamw

ADAMW_BETAS = (0.9, 0.99)


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices (embedding, recurrent and decoder weights), none on biases and
    other vectors, as in nanoGPT's ``configure_optimizers``."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def adamw(
    groups: list[dict[str, Any]], config: TrainConfig, device: torch.device
) -> torch.optim.AdamW:
    """AdamW over ``groups`` at the run's learning rate (the schedule sets it every step), fused
    where PyTorch has the kernel (runtime.fused_adamw)."""
    return torch.optim.AdamW(groups, lr=config.lr, betas=ADAMW_BETAS, fused=fused_adamw(device))


def clip_gradients(model: torch.nn.Module, max_norm: float) -> None:
    """``clip_grad_norm_``, exactly, without its pass over the gradients when nothing is clipped.

    On CUDA the norm stays on the device (reading it would be a host sync) and every gradient is
    scaled by ``min(1, max_norm / (norm + 1e-6))``; on CPU reading it costs nothing, and skipping
    the multiplication by 1 saves a pass over all the gradients in the usual unclipped step.
    """
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return
    norm = torch.nn.utils.get_total_norm(grads, foreach=True)
    if norm.device.type != "cpu" or not float(norm) + 1e-6 <= max_norm:
        torch.nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, norm, foreach=True)
