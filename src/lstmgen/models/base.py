"""What a model and an architecture must provide, written down as ``Protocol`` s.

Dimensions: B batch, T time, V vocabulary. ``Model`` is what the library's consumers (the
generator, the batcher, the trainer, the evaluator) may use of a model: ``LanguageModel``
(model.py) is the one implementation. ``Architecture`` is what ``LanguageModel`` asks of the
network behind it; the registry (registry.py) maps ``ModelConfig.arch`` to one.

Nothing here imports torch at run time: modeldir.py and the NumPy reference ask an architecture
for its weight shapes without it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from ..config import GenerationConfig, ModelConfig
    from ..state import State

# logits (B, V), state = step(ids (B,), state): one decoding step
StepFn = Callable[["torch.Tensor", "State"], tuple["torch.Tensor", "State"]]


class Stepper(Protocol):
    """A fused one-token step, worth it for batches below ``batch_below`` on its device."""

    batch_below: int

    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]: ...


class Model(Protocol):
    """A language model as its consumers see it (``LanguageModel`` in model.py)."""

    config: ModelConfig
    tokenizer: Any
    generation_config: GenerationConfig

    @property
    def device(self) -> torch.device: ...

    def __call__(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V) and the state after the last token."""
        ...

    def init_state(self, batch_size: int) -> State: ...

    def feature_state(self, features: Any) -> State:
        """The initial state from feature vectors (issue #13; feature_size > 0 only)."""
        ...

    def fast_stepper(self, batch_size: int) -> Stepper | None:
        """The architecture's fused step for ``batch_size`` on this device, or None where
        ``forward`` on one token is as fast or the architecture declares no stepper."""
        ...

    def parameters(self) -> Any: ...

    def state_dict(self) -> dict[str, torch.Tensor]: ...


class Architecture(Protocol):
    """One network family. It builds its modules on the ``LanguageModel`` (so weight names are
    the attribute paths it chooses), runs them, and says how its weights and state look.

    ``has_stepper`` is an explicit declaration: False means decoding steps through ``forward``
    one token at a time (decode.Step), never that a layer is skipped.

    Optional: ``forward_loss(model, ids, state, targets, activations)`` -> (mean cross-entropy,
    state), the training loss where the architecture computes it cheaper than from the full
    logits (recurrent.py's adaptive softmax); without it ``LanguageModel.loss`` takes
    ``forward``'s logits."""

    name: str
    has_stepper: bool

    def weight_shapes(self, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        """State-dict names -> shapes of a weights file for ``config`` (torch-free)."""
        ...

    def check_weight_header(
        self, shapes: dict[str, tuple[int, ...]], config: ModelConfig
    ) -> str | None:
        """A one-line reason a weights file's shapes cannot be for ``config`` (checked before
        the exact names and shapes, for a clearer message), or None."""
        ...

    def build(self, model: nn.Module) -> None:
        """Create the modules on ``model`` (a ``LanguageModel`` whose ``config`` is set) and
        initialise them; their attribute paths are the weight names."""
        ...

    def reset_parameters(self, model: nn.Module) -> None:
        """(Re)initialise the weights ``build`` made."""
        ...

    def forward(
        self, model: nn.Module, ids: torch.Tensor, state: Any
    ) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V), state. ``state`` None means the initial state."""
        ...

    def init_state(self, model: nn.Module, batch_size: int) -> State: ...

    def stepper(self, model: nn.Module, batch_size: int) -> Stepper | None:
        """Only called when ``has_stepper``; None where ``forward`` is as fast."""
        ...

    def any_stepper(self, model: nn.Module) -> Stepper:
        """A stepper on any device and batch (``LanguageModel.stepper``)."""
        ...
