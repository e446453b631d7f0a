"""The PyTorch language model: the public class, whatever the architecture behind it.

Dimensions: B batch, T time, V vocabulary.

``LanguageModel`` asks the registry (models/registry.py) for the architecture ``config.arch``
names (the recurrent LSTM/GRU/RNN stack, models/recurrent.py, is the default), which builds its
modules on it and runs them. The state goes in and comes out: ``logits, state = model(ids,
state)``, a ``State`` (state.py) the architecture makes; nothing is kept on the module, so one
model serves any number of independent sequences.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import load_tensors, load_weights_into, save_model
from .config import GenerationConfig, ModelConfig
from .errors import ConfigError, DataError
from .modeldir import WEIGHTS, check_weights_file, read_model_meta, read_quantization
from .models.base import StepFn, Stepper
from .models.registry import get_architecture
from .state import State


class LanguageModel(nn.Module):
    """A language model; ``tokenizer`` and ``generation_config`` travel with it."""

    def __init__(
        self,
        config: ModelConfig,
        tokenizer: Any = None,
        generation_config: GenerationConfig | None = None,
    ):
        super().__init__()
        config.validate()
        self.config = config
        self.tokenizer = tokenizer
        self.generation_config = generation_config or GenerationConfig()
        self.arch = get_architecture(config.arch)  # a plain object: holds no weights
        if config.feature_size and not hasattr(self.arch, "feature_state"):
            raise ConfigError(
                f"arch {config.arch!r} takes no feature vectors: feature_size must be 0"
            )
        self.arch.build(self)  # the modules: self.embedding, self.rnn, ... for "recurrent"
        # int8 weights as loaded (name -> (int8 (out, in), float32 scales (out,))) when the
        # directory is quantized; the modules hold them dequantized (export/int8.py)
        self.int8: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None

    def reset_parameters(self) -> None:
        self.arch.reset_parameters(self)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int) -> State:
        """The initial state for ``batch_size`` sequences (zeros for the recurrent stack:
        (h, c) for LSTM, (h,) otherwise, each (L, B, H))."""
        return self.arch.init_state(self, batch_size)

    def feature_state(self, features: Any) -> State:
        """The initial state of sequences conditioned on feature vectors (B, F) (issue #13), or
        a list of F floats for one sequence; checked first: wrong length or NaN is one
        ``DataError``. Only for a model trained with ``feature_size`` > 0."""
        from .documents import check_features

        F = self.config.feature_size
        if not F:
            raise DataError("this model takes no feature vectors (it was trained without them)")
        if not isinstance(features, torch.Tensor):
            features = torch.tensor([check_features(features, F)])  # (1, F)
        w = self.features.weight
        return self.arch.feature_state(self, features.to(device=w.device, dtype=w.dtype))

    def forward(
        self,
        ids: Tensor,
        state: State | None = None,
        activations: list[Tensor] | None = None,
        targets: Tensor | None = None,
    ) -> tuple[Tensor, State]:
        """``activations``: a list the architecture fills with the last layer's output before
        and after dropout (only one with ``exposes_activations``; the trainer's AR/TAR).

        ``targets`` (B, T): the training loss instead of the logits, ``(mean cross-entropy,
        state)`` (-100: not scored), as the architecture computes it best (``forward_loss``:
        an adaptive softmax never builds the (B, T, V) logits); through ``forward`` so that
        DDP's wrapper sees the call."""
        if targets is not None:
            return self.loss(ids, state, targets, activations)
        if activations is None:
            return self.arch.forward(self, ids, state)  # logits (B, T, V), state
        return self.arch.forward(self, ids, state, activations)  # type: ignore[call-arg]

    def loss(
        self,
        ids: Tensor,
        state: State | None,
        targets: Tensor,
        activations: list[Tensor] | None = None,
    ) -> tuple[Tensor, State]:
        """(mean cross-entropy of ``targets`` (B, T), state): the architecture's
        ``forward_loss``, or cross-entropy of ``forward``'s logits for one without it."""
        if hasattr(self.arch, "forward_loss"):
            return self.arch.forward_loss(self, ids, state, targets, activations)
        logits, state = self.forward(ids, state, activations)  # (B, T, V)
        V = logits.shape[-1]
        return F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1)), state

    def fast_stepper(self, batch_size: int) -> Stepper | None:
        """The architecture's fused one-token step for ``batch_size`` on this device, or None
        where ``forward`` on one token is as fast (a large CPU batch, a GPU) or the
        architecture declares no stepper (decode.Step then steps through ``forward``)."""
        return self.arch.stepper(self, batch_size) if self.arch.has_stepper else None

    def stepper(self, batch_size: int = 1) -> Stepper | StepFn:
        """A function ``logits (B, V), state = step(ids (B,), state)`` for one decoding step.

        Same function as ``forward`` on one token (eval mode: no dropout), on the fastest path
        for ``batch_size`` on this device (for the recurrent stack, the gate matmuls fused: see
        models/recurrent_steppers.py). The weights are copied when it is made, so make a new one
        after training changes them. Without a stepper of its architecture: ``forward``."""
        if not self.arch.has_stepper:
            from .decode import model_step

            return model_step(self)
        return self.fast_stepper(batch_size) or self.arch.any_stepper(self)

    # --- model directories -------------------------------------------------------------------

    def save_pretrained(self, path: str | Path) -> None:
        """Write config.json, tokenizer.json, generation_config.json and model.safetensors."""
        save_model(self, path)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> LanguageModel:
        """Load a model directory (never unpickles: JSON and safetensors only).

        >>> model = LanguageModel.from_pretrained("runs/poems")  # doctest: +SKIP
        >>> print("".join(model.generate("ROMEO:", max_new_tokens=50, seed=1)))  # doctest: +SKIP
        """
        return load_model(path, device=device)

    # --- generation --------------------------------------------------------------------------

    def generate(self, prompt: str = "", **options: Any) -> Iterator[str]:
        """Stream one sample as text chunks. Options are GenerationConfig fields plus ``unknown``.

        >>> for chunk in model.generate("ROMEO:", temperature=0.8):  # doctest: +SKIP
        ...     print(chunk, end="")
        """
        from .generate import stream_text

        for event in stream_text(self, [prompt], **options):
            yield event.text

    def complete(self, prompt: str = "", n: int = 1, **options: Any) -> list[str]:
        """``n`` samples for ``prompt`` decoded as one batch; returns the generated texts."""
        from .generate import complete_texts

        return complete_texts(self, [prompt] * n, **options)


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LanguageModel:
    """``LanguageModel.from_pretrained``: the JSON parts and the weights' header are checked
    before the model is built (modeldir.py), the tensors before they are loaded."""
    path = Path(path)
    config, tokenizer, gen = read_model_meta(path)
    quantization = read_quantization(path)
    check_weights_file(path / WEIGHTS, config, quantization)
    model = LanguageModel(config, tokenizer, gen)
    tensors = load_tensors(path / WEIGHTS)
    if quantization is not None:
        from .export.int8 import QWEIGHT, SCALE

        # The modules compute with the dequantized values (priming, evaluation, large CPU
        # batches, GPUs); the CPU decoding step uses the int8 matrices (recurrent_int8.py).
        model.int8 = {
            k: (tensors.pop(k + QWEIGHT), tensors.pop(k + SCALE)) for k in quantization["weights"]
        }
        tensors.update({k: q.float() * s[:, None] for k, (q, s) in model.int8.items()})
    load_weights_into(model, tensors, path / WEIGHTS)
    model.eval()
    return model.to(device)
