"""``lstmgen serve DIR --backend onnx``: an ``OnnxModel`` behind the ``Model`` interface the
server's batcher, per-row sampler, scoring and streaming already use, so every endpoint
(completions and chat, streaming, logprobs, echo, request batching) is the torch backend's code
with onnxruntime computing the logits.

Torch is imported here: the batcher and the per-row sampler work on torch tensors (CPU tensors
and NumPy arrays share memory, so each step's conversion is free). A torch-free server needs a
NumPy batcher over ``reference.generate``'s sampler (docs/architecture.md, seams).

The server asks for the logits at every position of a prompt (``echo`` with ``logprobs``,
scoring). An int8 directory gets a prime graph that returns them (float32 on the dequantized
weights, as the torch backend primes it, so the text is the torch backend's); an exported
folder's prime.onnx returns only the last, so its prompts step through step.onnx one token at a
time. A decoding step is one ``session.run`` at any batch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from ..errors import ConfigError
from ..models.registry import get_architecture
from ..state import State
from .onnx_runtime import OnnxModel


class _OnnxStepper:
    """``logits (B, V), State = stepper(ids (B,), State)`` through step.onnx at any batch."""

    batch_below = math.inf  # decode.Step: one session call at every batch size

    def __init__(self, served: OnnxServedModel):
        self.served = served

    def __call__(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.served.step(ids, state)


class OnnxServedModel:
    """An exported ONNX folder or an int8 model directory, decoded by onnxruntime, with the
    methods the server calls on a ``LanguageModel``."""

    def __init__(self, path: str | Path, threads: int = 1):
        self.onnx = OnnxModel(path, threads=threads, every_position=True)
        self.config = self.onnx.config
        self.tokenizer = self.onnx.tokenizer
        self.generation_config = self.onnx.generation_config
        self.device = torch.device("cpu")
        self._stepper = _OnnxStepper(self)

    def eval(self) -> OnnxServedModel:
        return self

    def num_parameters(self) -> int:
        shapes = get_architecture(self.config.arch).weight_shapes(self.config)
        return sum(math.prod(s) for s in shapes.values())

    def init_state(self, batch_size: int) -> State:
        return State(tuple(torch.from_numpy(p) for p in self.onnx.init_state(batch_size)))

    def feature_state(self, features: Any) -> State:
        raise ConfigError("the onnx backend does not take feature vectors: use --backend torch")

    def fast_stepper(self, batch_size: int) -> _OnnxStepper:
        return self._stepper

    def step(self, ids: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        parts = tuple(p.numpy() for p in State.of(state))
        logits, new = self.onnx(ids.numpy()[:, None], parts)  # (B, 1, V)
        return torch.from_numpy(logits[:, 0]), State(tuple(torch.from_numpy(p) for p in new))

    def __call__(self, ids: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        """ids (B, T) -> logits (B, T, V) and the state after the last token."""
        state = self.init_state(ids.shape[0]) if state is None else State.of(state)
        if ids.shape[1] == 1:
            logits, state = self.step(ids[:, 0], state)
            return logits[:, None], state
        parts = tuple(p.numpy() for p in state)
        logits, new = self.onnx.logits_at_every_position(ids.numpy(), parts)
        return torch.from_numpy(logits), State(tuple(torch.from_numpy(p) for p in new))

    forward = __call__

    def parameters(self) -> Any:
        return iter(())

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {}
