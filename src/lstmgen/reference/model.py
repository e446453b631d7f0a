"""The NumPy language model: the same network, weights and state as ``lstmgen.model``.

Dimensions: B batch, T time, V vocabulary, E embedding, H hidden, L layers.

    ids (B, T) -> embedding (B, T, E) -> LSTM/GRU/RNN x L (B, T, H), dropout after each layer
               -> [projection H -> E when tied and E != H] -> decoder -> logits (B, T, V)

Parameters live in one dict under their PyTorch state-dict names (``rnn.weight_ih_l0``, ...), so a
model directory written by either backend loads in the other. The state is PyTorch's too:
``(h, c)`` each (L, B, H) for the LSTM, ``h`` (L, B, H) for GRU and RNN.

``arch == "sha-lstm"`` (issue #12) inserts the attention block of attention.py after LSTM layer
``a``; its LSTM layers are named ``lower.*_l{k}`` (layers 0..a) and ``upper.*_l{k}`` (the rest),
and its state is ``(h, c, memory (B, M, H), length (B,) int64)``, as ``lstmgen.models.attention``.

    >>> model = LanguageModel.from_pretrained("runs/poems")        # doctest: +SKIP
    >>> logits, state = model(ids)                                 # doctest: +SKIP
    >>> logits, state, cache = model.forward(ids, state)           # doctest: +SKIP
    >>> grads, dstate0 = model.backward(cache, dlogits)            # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ..config import GenerationConfig, ModelConfig
from ..modeldir import weight_shapes as parameter_shapes  # name -> shape, as PyTorch stores them
from ..models.adaptive import refuse as refuse_adaptive
from ..models.attention import check_memory_fits
from ..tokenizers import Tokenizer
from . import layers
from .attention import attention_backward, attention_forward
from .cells import BACKWARD, FORWARD
from .checkpoint import check_weights, read_model_dir, write_model_dir

State = np.ndarray | tuple[np.ndarray, ...]
SHA = "sha-lstm"


def attention_index(config: ModelConfig) -> int | None:
    """The LSTM layer the attention block follows (negative ``attention_layer`` counts from the
    end, like Python), or None for an architecture without one."""
    if config.arch != SHA:
        return None
    return config.attention_layer % config.num_layers


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
        refuse_adaptive(config, "the NumPy reference (--backend numpy)")  # a plain decoder only
        check_weights(params, parameter_shapes(config), "parameters")
        self.config = config
        self.params = params
        self.attention_at = attention_index(config)  # None: the plain recurrent stack
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
            if name.startswith(("rnn.", "lower.", "upper.")):
                bound = 1 / np.sqrt(H)
            elif name in ("projection.weight", "attention.query.weight", "attention.query.bias"):
                bound = 1 / np.sqrt(H)  # nn.Linear's default: U(+-1/sqrt(fan_in))
            elif name.startswith("attention.ff_in."):
                bound = 1 / np.sqrt(H)
            elif name == "decoder.bias" or name.startswith("attention."):
                # gates 0 (sigma = 0.5), norms' biases 0 and ff_out 0: the block starts as
                # the identity plus plain averaging attention; norms' weights are set to 1 below
                bound = 0.0
            else:
                bound = 0.1
            params[name] = rng.uniform(-bound, bound, shape).astype(dtype)
        for name in ("attention.norm.weight", "attention.ff_norm.weight"):
            if name in params:
                params[name][...] = 1.0
        model = cls(config, params, tokenizer, generation_config)
        if config.cell == "lstm":  # gates i, f, g, o: the forget gate's b_ih + b_hh sums to 1
            for k in range(config.num_layers):
                model._layer_params(k)["b_ih"][H : 2 * H] = 1.0
                model._layer_params(k)["b_hh"][H : 2 * H] = 0.0
        return model

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
        """Zero state: (h, c) for the LSTM, h otherwise, each (L, B, H); sha-lstm adds an
        empty memory (B, M, H) and its lengths (B,) int64 (all 0)."""
        c = self.config
        h = np.zeros((c.num_layers, batch_size, c.hidden_size), self.dtype)
        if self.attention_at is not None:
            self.check_state_fits(batch_size)
            memory = np.zeros((batch_size, c.memory, c.hidden_size), self.dtype)  # (B, M, H)
            return (h, h.copy(), memory, np.zeros(batch_size, np.int64))
        return (h, h.copy()) if c.cell == "lstm" else h

    def check_state_fits(self, batch_size: int) -> None:
        """A sha-lstm memory for ``batch_size`` sequences that RAM cannot hold is one error
        naming the sizes: the PyTorch model's check (it reads only ``device.type``)."""
        if self.attention_at is not None:
            cpu = SimpleNamespace(type="cpu")
            check_memory_fits(self.config, batch_size, cpu, self.dtype.itemsize)  # type: ignore[arg-type]

    @property
    def state_batch_dims(self) -> tuple[int, ...]:
        """The batch axis of each part of the state (as ``lstmgen.state.State.batch_dims``)."""
        if self.attention_at is not None:
            return (1, 1, 0, 0)
        return (1, 1) if self.config.cell == "lstm" else (1,)

    def _layers(self, state: State) -> list[tuple[np.ndarray, ...]]:
        """PyTorch-style state -> one tuple per layer: (h, c) or (h,), each (B, H)."""
        parts = state if isinstance(state, tuple) else (state,)
        if self.attention_at is not None:
            parts = parts[:2]  # the memory and its lengths are the attention block's
        return [tuple(s[k] for s in parts) for k in range(self.config.num_layers)]

    def _stack(self, per_layer: list[tuple[np.ndarray, ...]]) -> State:
        parts = tuple(np.stack(s) for s in zip(*per_layer, strict=True))  # each (L, B, H)
        return parts if self.config.cell == "lstm" else parts[0]

    def _layer_name(self, k: int) -> str:
        """Layer k's state-dict prefix: ``rnn.*_l{k}``, or for sha-lstm the two stacks either
        side of the attention block, ``lower.*_l{k}`` (k <= a) and ``upper.*_l{k - a - 1}``."""
        a = self.attention_at
        if a is None:
            return f"rnn.{{}}_l{k}"
        return f"lower.{{}}_l{k}" if k <= a else f"upper.{{}}_l{k - a - 1}"

    def _layer_params(self, k: int) -> dict[str, np.ndarray]:
        p, name = self.params, self._layer_name(k)
        return {
            "W_ih": p[name.format("weight_ih")],
            "W_hh": p[name.format("weight_hh")],
            "b_ih": p[name.format("bias_ih")],
            "b_hh": p[name.format("bias_hh")],
        }

    def _attention_params(self) -> dict[str, np.ndarray]:
        prefix = "attention."
        return {k[len(prefix) :]: v for k, v in self.params.items() if k.startswith(prefix)}

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
        attn_cache, memory = None, ()
        for k, layer_state in enumerate(self._layers(state)):
            y, final, cache = FORWARD[c.cell](x, layer_state, self._layer_params(k))  # (B, T, H)
            if k == self.attention_at:  # no dropout between the layer and its attention
                y, mem, length, attn_cache = attention_forward(
                    y, state[2], state[3], self._attention_params()
                )
                memory = (mem, length)
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
        cache["attention"] = attn_cache
        final_state = self._stack(finals)
        return logits, final_state + memory if memory else final_state, cache

    def backward(
        self, cache: dict[str, Any], dlogits: np.ndarray, dstate: State | None = None
    ) -> tuple[dict[str, np.ndarray], State]:
        """Backpropagate ``dlogits`` (B, T, V) (and ``dstate``, the gradient of the loss with
        respect to the final state, if the loss depends on it) through the whole sequence.
        Returns the gradient of every parameter (same keys as ``params``) and of the initial
        state (PyTorch's state layout). For sha-lstm ``dstate`` is ``(dh, dc, dmemory)`` (a
        fourth part, the lengths, is ignored) and so is the returned gradient: the lengths are
        integers, with no gradient."""
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
        dmemory: tuple[np.ndarray, ...] = ()
        for k in reversed(range(c.num_layers)):
            mask = cache["masks"][k]
            if mask is not None:
                dx = dx * mask
            if k == self.attention_at:  # into the layer's output and the memory that came in
                dx, dmem, g = attention_backward(dx, dstate[2], cache["attention"])
                grads.update({f"attention.{name}": v for name, v in g.items()})
                dmemory = (dmem,)
            dx, dfirst[k], g = BACKWARD[c.cell](dx, dstates[k], cache["layers"][k])
            name = self._layer_name(k)
            grads[name.format("weight_ih")] = g["W_ih"]
            grads[name.format("weight_hh")] = g["W_hh"]
            grads[name.format("bias_ih")], grads[name.format("bias_hh")] = g["b_ih"], g["b_hh"]
        demb = layers.embedding_backward(cache["ids"], dx, c.vocab_size)
        # Tied weights: the one matrix is used twice, so its gradient is the sum of both uses.
        grads["embedding.weight"] = demb + dweight if c.tie_weights else demb
        if not c.tie_weights:
            grads["decoder.weight"] = dweight
        dstate0 = self._stack(dfirst)
        return grads, dstate0 + dmemory if dmemory else dstate0

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
