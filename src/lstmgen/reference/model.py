"""The NumPy language model: the same network, weights and state as ``lstmgen.model``.

Dimensions: B batch, T time, V vocabulary, E embedding, H hidden, L layers.

    ids (B, T) -> embedding (B, T, E) -> LSTM/GRU/RNN x L (B, T, H), dropout after each layer
               -> [projection H -> E when tied and E != H] -> decoder -> logits (B, T, V)

Parameters live in one dict under their PyTorch state-dict names (``rnn.weight_ih_l0``, ...), so a
model directory written by either backend loads in the other. The state is PyTorch's too:
``(h, c)`` each (L, B, H) for the LSTM, ``h`` (L, B, H) for GRU and RNN.

    >>> model = LanguageModel.from_pretrained("runs/poems")        # doctest: +SKIP
    >>> logits, state = model(ids)                                 # doctest: +SKIP
    >>> logits, state, cache = model.forward(ids, state)           # doctest: +SKIP
    >>> grads, dstate0 = model.backward(cache, dlogits)            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..config import GenerationConfig, ModelConfig
from ..modeldir import weight_shapes as parameter_shapes  # name -> shape, as PyTorch stores them
from ..tokenizers import Tokenizer
from . import layers
from .cells import BACKWARD, FORWARD
from .checkpoint import check_weights, read_model_dir, write_model_dir

State = np.ndarray | tuple[np.ndarray, np.ndarray]


class LanguageModel:
    """A recurrent language model in NumPy; ``params`` maps PyTorch names to arrays."""

    def __init__(
        self,
        config: ModelConfig,
        params: dict[str, np.ndarray],
        tokenizer: Tokenizer | None = None,
        generation_config: GenerationConfig | None = None,
    ):
        config.validate()
        check_weights(params, parameter_shapes(config), "parameters")
        self.config = config
        self.params = params
        self.tokenizer = tokenizer
        self.generation_config = generation_config or GenerationConfig()

    # --- construction and files ---------------------------------------------------------------

    @classmethod
    def init(
        cls,
        config: ModelConfig,
        seed: int = 0,
        dtype: Any = np.float64,
        tokenizer: Tokenizer | None = None,
        generation_config: GenerationConfig | None = None,
    ) -> LanguageModel:
        """Fresh weights drawn like the PyTorch model's (same distributions, not the same
        numbers): recurrent weights U(-1/sqrt(H), 1/sqrt(H)), embedding and decoder U(-0.1, 0.1),
        decoder bias 0, LSTM forget-gate bias 1."""
        rng = np.random.default_rng(seed)
        H = config.hidden_size
        params = {}
        for name, shape in parameter_shapes(config).items():
            if name.startswith("rnn."):
                bound = 1 / np.sqrt(H)
            elif name == "projection.weight":
                bound = 1 / np.sqrt(shape[1])  # nn.Linear's default: U(+-1/sqrt(fan_in))
            elif name == "decoder.bias":
                bound = 0.0
            else:
                bound = 0.1
            params[name] = rng.uniform(-bound, bound, shape).astype(dtype)
        if config.cell == "lstm":  # gates i, f, g, o: the forget gate's b_ih + b_hh sums to 1
            for k in range(config.num_layers):
                params[f"rnn.bias_ih_l{k}"][H : 2 * H] = 1.0
                params[f"rnn.bias_hh_l{k}"][H : 2 * H] = 0.0
        return cls(config, params, tokenizer, generation_config)

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: Any = np.float32) -> LanguageModel:
        """Load a model directory written by either backend (JSON and safetensors only)."""
        config, tokenizer, gen, weights = read_model_dir(path)  # names and shapes checked
        params = {k: v.astype(dtype) for k, v in weights.items()}
        return cls(config, params, tokenizer, gen)

    def save_pretrained(self, path: str | Path) -> None:
        """Write a model directory that ``lstmgen.LanguageModel.from_pretrained`` loads."""
        weights = {k: v.astype(np.float32) for k, v in self.params.items()}
        write_model_dir(path, self.config, self.tokenizer, self.generation_config, weights)

    def num_parameters(self) -> int:
        return sum(v.size for v in self.params.values())

    @property
    def dtype(self) -> np.dtype:
        return self.params["embedding.weight"].dtype

    # --- state --------------------------------------------------------------------------------

    def init_state(self, batch_size: int) -> State:
        """Zero state: (h, c) for the LSTM, h otherwise, each (L, B, H)."""
        c = self.config
        h = np.zeros((c.num_layers, batch_size, c.hidden_size), self.dtype)
        return (h, h.copy()) if c.cell == "lstm" else h

    def _layers(self, state: State) -> list[tuple[np.ndarray, ...]]:
        """PyTorch-style state -> one tuple per layer: (h, c) or (h,), each (B, H)."""
        parts = state if isinstance(state, tuple) else (state,)
        return [tuple(s[k] for s in parts) for k in range(self.config.num_layers)]

    def _stack(self, per_layer: list[tuple[np.ndarray, ...]]) -> State:
        parts = tuple(np.stack(s) for s in zip(*per_layer, strict=True))  # each (L, B, H)
        return parts if self.config.cell == "lstm" else parts[0]

    def _layer_params(self, k: int) -> dict[str, np.ndarray]:
        p = self.params
        return {
            "W_ih": p[f"rnn.weight_ih_l{k}"],
            "W_hh": p[f"rnn.weight_hh_l{k}"],
            "b_ih": p[f"rnn.bias_ih_l{k}"],
            "b_hh": p[f"rnn.bias_hh_l{k}"],
        }

    # --- forward and backward -----------------------------------------------------------------

    def __call__(self, ids: np.ndarray, state: State | None = None) -> tuple[np.ndarray, State]:
        """Evaluation forward: ``logits (B, T, V), state = model(ids (B, T), state)``."""
        logits, state, _ = self.forward(ids, state)
        return logits, state

    def forward(
        self, ids: np.ndarray, state: State | None = None, rng: np.random.Generator | None = None
    ) -> tuple[np.ndarray, State, dict[str, Any]]:
        """-> (logits (B, T, V), final state, cache for ``backward``). Dropout is applied only
        when ``rng`` is given (training)."""
        c, p = self.config, self.params
        ids = np.asarray(ids)
        B = ids.shape[0]
        state = self.init_state(B) if state is None else state
        x = layers.embedding_forward(ids, p["embedding.weight"])  # (B, T, E)
        layer_caches, masks, finals = [], [], []
        for k, layer_state in enumerate(self._layers(state)):
            y, final, cache = FORWARD[c.cell](x, layer_state, self._layer_params(k))  # (B, T, H)
            mask = layers.dropout_mask(y.shape, c.dropout, rng, y.dtype)
            x = y if mask is None else y * mask  # PyTorch: between layers, then after the last
            layer_caches.append(cache)
            masks.append(mask)
            finals.append(final)
        out = x  # (B, T, H)
        if "projection.weight" in p:
            dec_in = layers.linear_forward(out, p["projection.weight"], None)  # (B, T, E)
        else:
            dec_in = out
        weight = p["embedding.weight"] if c.tie_weights else p["decoder.weight"]
        logits = layers.linear_forward(dec_in, weight, p["decoder.bias"])  # (B, T, V)
        cache = {"ids": ids, "layers": layer_caches, "masks": masks, "out": out, "dec_in": dec_in}
        return logits, self._stack(finals), cache

    def backward(
        self, cache: dict[str, Any], dlogits: np.ndarray, dstate: State | None = None
    ) -> tuple[dict[str, np.ndarray], State]:
        """Backpropagate ``dlogits`` (B, T, V) (and ``dstate``, the gradient of the loss with
        respect to the final state, if the loss depends on it) through the whole sequence.
        Returns the gradient of every parameter (same keys as ``params``) and of the initial
        state (PyTorch's state layout)."""
        c, p = self.config, self.params
        grads: dict[str, np.ndarray] = {}
        weight = p["embedding.weight"] if c.tie_weights else p["decoder.weight"]
        d_dec_in, dweight, grads["decoder.bias"] = layers.linear_backward(
            cache["dec_in"], dlogits, weight
        )
        if "projection.weight" in p:
            dx, grads["projection.weight"], _ = layers.linear_backward(
                cache["out"], d_dec_in, p["projection.weight"]
            )
        else:
            dx = d_dec_in  # (B, T, H)
        B = dlogits.shape[0]
        dstate = self.init_state(B) if dstate is None else dstate
        dstates = self._layers(dstate)
        dfirst: list[tuple[np.ndarray, ...]] = [()] * c.num_layers
        for k in reversed(range(c.num_layers)):
            mask = cache["masks"][k]
            if mask is not None:
                dx = dx * mask
            dx, dfirst[k], g = BACKWARD[c.cell](dx, dstates[k], cache["layers"][k])
            grads[f"rnn.weight_ih_l{k}"], grads[f"rnn.weight_hh_l{k}"] = g["W_ih"], g["W_hh"]
            grads[f"rnn.bias_ih_l{k}"], grads[f"rnn.bias_hh_l{k}"] = g["b_ih"], g["b_hh"]
        demb = layers.embedding_backward(cache["ids"], dx, c.vocab_size)
        # Tied weights: the one matrix is used twice, so its gradient is the sum of both uses.
        grads["embedding.weight"] = demb + dweight if c.tie_weights else demb
        if not c.tie_weights:
            grads["decoder.weight"] = dweight
        return grads, self._stack(dfirst)

    def loss_and_grads(
        self,
        ids: np.ndarray,
        targets: np.ndarray,
        state: State | None = None,
        rng: np.random.Generator | None = None,
    ) -> tuple[float, dict[str, np.ndarray], State]:
        """One truncated-BPTT window: mean cross-entropy, parameter gradients, final state."""
        logits, final, cache = self.forward(ids, state, rng)
        loss, dlogits = layers.cross_entropy(logits, targets)
        grads, _ = self.backward(cache, dlogits)
        return loss, grads, final

    # --- generation ---------------------------------------------------------------------------

    def generate(self, prompt: str = "", **options: Any) -> Iterator[str]:
        """Stream one sample as text chunks (options: GenerationConfig fields, ``unknown``)."""
        from .generate import stream_text

        for event in stream_text(self, [prompt], **options):
            yield event.text
