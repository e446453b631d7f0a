"""The recurrent architecture (``arch: "recurrent"``): embedding -> LSTM/GRU/RNN x L -> decoder.

Dimensions: B batch, T time, V vocabulary, E embedding, H hidden, L layers.

    ids (B, T) -> embedding (B, T, E) -> LSTM/GRU/RNN x L (B, T, H) -> dropout
               -> [projection H -> E when tied and E != H] -> decoder -> logits (B, T, V)

The decoder is a linear layer, or with ``adaptive_cutoffs`` an adaptive softmax (adaptive.py)
whose log-probabilities are the logits; the trainer asks ``forward_loss`` for its loss.

The state is a ``State`` (state.py): ``(h, c)`` for an LSTM, ``(h,)`` for a GRU or RNN, each
(L, B, H). ``forward`` also takes the forms older callers pass (a tuple, or a bare ``h``).

Everything this stack alone knows lives here: its modules (built on the ``LanguageModel``, so
the weight names stay ``embedding.weight``, ``rnn.weight_ih_l0``, ...), their initialisation,
the weight names and shapes (asked by modeldir.py without building anything), the initial
state, and the fused one-token steps (recurrent_steppers.py). Torch is imported inside the
methods: the NumPy reference reads the weight shapes through this module without torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..state import State
from . import adaptive, awd

if TYPE_CHECKING:
    from torch import Tensor, nn

    from ..config import ModelConfig
    from .recurrent_steppers import NumpyStepper, TorchStepper

GATES = {"lstm": 4, "gru": 3, "rnn": 1}  # gates stacked per layer: i,f,g,o / r,z,n / h


def init_embedding_and_decoder(model: nn.Module) -> None:
    """Small embeddings/decoder (as in pytorch/examples word_language_model): loss at
    initialisation is close to ln(V). Shared by every architecture with these modules."""
    from torch import nn

    nn.init.uniform_(model.embedding.weight, -0.1, 0.1)
    if getattr(model.config, "adaptive_cutoffs", None):  # adaptive.build initialised the head
        return
    if not model.config.tie_weights:
        nn.init.uniform_(model.decoder.weight, -0.1, 0.1)
    nn.init.zeros_(model.decoder.bias)


def forget_bias_one(lstm: nn.Module, H: int) -> None:
    """Forget-gate bias 1 (Gers et al. 2000; Jozefowicz et al. 2015): remember by default.
    PyTorch's gate order is i, f, g, o and it adds b_ih + b_hh, so set the sum to 1."""
    import torch

    for name, p in lstm.named_parameters():
        if name.startswith("bias_"):
            with torch.no_grad():
                p[H : 2 * H] = 1.0 if name.startswith("bias_ih") else 0.0


class Recurrent:
    """The LSTM/GRU/RNN stack; ``ModelConfig.cell`` picks the cell."""

    name = "recurrent"
    has_stepper = True

    def weight_shapes(self, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        V, E, H = config.vocab_size, config.embedding_size, config.hidden_size
        G = GATES[config.cell] * H
        shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (V, E)}
        for k in range(config.num_layers):
            shapes[f"rnn.weight_ih_l{k}"] = (G, E if k == 0 else H)
            shapes[f"rnn.weight_hh_l{k}"] = (G, H)
            shapes[f"rnn.bias_ih_l{k}"] = (G,)
            shapes[f"rnn.bias_hh_l{k}"] = (G,)
        if config.tie_weights and config.embedding_size != H:
            shapes["projection.weight"] = (E, H)
        if config.adaptive_cutoffs:  # the adaptive softmax's head and tails (adaptive.py)
            shapes.update(adaptive.weight_shapes(config, E if config.tie_weights else H))
        else:
            if not config.tie_weights:  # tied: the decoder's weight is the embedding, stored once
                shapes["decoder.weight"] = (V, H)
            shapes["decoder.bias"] = (V,)
        if config.feature_size:  # feature vector -> initial state (feature_state)
            S = (2 if config.cell == "lstm" else 1) * config.num_layers * H
            shapes["features.weight"] = (S, config.feature_size)
            shapes["features.bias"] = (S,)
        return shapes

    def check_weight_header(
        self, shapes: dict[str, tuple[int, ...]], config: ModelConfig
    ) -> str | None:
        layers = sum(k.startswith("rnn.weight_hh_l") for k in shapes)
        if layers != config.num_layers:
            return f"holds {layers} recurrent layer(s), config.json says {config.num_layers}"
        return None

    def build(self, model: nn.Module) -> None:
        from torch import nn

        cfg = model.config
        V, E, H, L = cfg.vocab_size, cfg.embedding_size, cfg.hidden_size, cfg.num_layers
        rnn_class = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cfg.cell]
        model.embedding = nn.Embedding(V, E)
        model.rnn = rnn_class(
            E, H, num_layers=L, batch_first=True, dropout=cfg.dropout if L > 1 else 0.0
        )
        model.dropout = nn.Dropout(cfg.dropout)
        model.projection = nn.Linear(H, E, bias=False) if cfg.tie_weights and E != H else None
        if cfg.adaptive_cutoffs:  # adaptive softmax (Grave et al. 2017), tied or not
            model.decoder = adaptive.build(cfg, E if cfg.tie_weights else H)
        else:
            model.decoder = nn.Linear(E if cfg.tie_weights else H, V)
        if cfg.tie_weights:
            model.decoder.weight = model.embedding.weight  # Press & Wolf 2017, Inan et al. 2017
        # Conditioning on a feature vector F (issue #13): one linear map to every layer's initial
        # h (and c), as Show and Tell feeds the image embedding in first (Vinyals et al. 2015).
        parts = 2 if cfg.cell == "lstm" else 1
        model.features = nn.Linear(cfg.feature_size, parts * L * H) if cfg.feature_size else None
        self.reset_parameters(model)

    def reset_parameters(self, model: nn.Module) -> None:
        init_embedding_and_decoder(model)
        if model.config.cell == "lstm":
            forget_bias_one(model.rnn, model.config.hidden_size)

    def init_state(self, model: nn.Module, batch_size: int) -> State:
        """Zeros: (h, c) for LSTM, (h,) otherwise, each (L, B, H)."""
        import torch

        L, H = model.config.num_layers, model.config.hidden_size
        w = model.embedding.weight
        h = torch.zeros(L, batch_size, H, device=w.device, dtype=w.dtype)  # (L, B, H)
        return State((h, torch.zeros_like(h)) if model.config.cell == "lstm" else (h,))

    def feature_state(self, model: nn.Module, features: Tensor) -> State:
        """features (B, F) -> the initial state of B sequences: h = tanh(W f + b) for every
        layer (in the range h always has), and for an LSTM c = W' f + b' (a cell is unbounded)."""
        import torch

        L, H = model.config.num_layers, model.config.hidden_size
        B = features.shape[0]
        parts = model.features(features).view(B, -1, L, H).permute(1, 2, 0, 3)  # (P, L, B, H)
        h = torch.tanh(parts[0]).contiguous()  # (L, B, H)
        if model.config.cell == "lstm":
            return State((h, parts[1].contiguous()))
        return State((h,))

    # forward fills an ``activations`` list (AR/TAR in the trainer, issue #16)
    exposes_activations = True

    def forward(
        self, model: nn.Module, ids: Tensor, state: Any, activations: list[Tensor] | None = None
    ) -> tuple[Tensor, State]:
        """``activations``, when given, receives the last layer's output before and after its
        dropout, (B, T, H) each (AWD-LSTM's TAR and AR terms). With an adaptive softmax the
        "logits" are its log-probabilities (log-softmax leaves them as they are)."""
        out, state = self._features(model, ids, state, activations)  # (B, T, H or E)
        if model.config.adaptive_cutoffs:
            return adaptive.log_probs(model.decoder, out), state  # (B, T, V)
        return model.decoder(out), state  # logits (B, T, V)

    def forward_loss(
        self,
        model: nn.Module,
        ids: Tensor,
        state: Any,
        targets: Tensor,
        activations: list[Tensor] | None = None,
    ) -> tuple[Tensor, State]:
        """The mean cross-entropy of ``targets`` (B, T) (-100: not scored) and the state: the
        training loss. An adaptive softmax computes only the targets' clusters; the plain
        decoder the full logits, as the trainer did before this seam."""
        import torch.nn.functional as F

        if not model.config.adaptive_cutoffs:
            logits, state = self.forward(model, ids, state, activations)  # (B, T, V)
            V = logits.shape[-1]
            return F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1)), state
        out, state = self._features(model, ids, state, activations)  # (B, T, H)
        return adaptive.loss(model.decoder, out, targets), state

    def _features(
        self, model: nn.Module, ids: Tensor, state: Any, activations: list[Tensor] | None
    ) -> tuple[Tensor, State]:
        """ids (B, T) -> what the decoder reads (B, T, H, or E through the projection)."""
        lstm = model.config.cell == "lstm"
        hx = None
        if state is not None:
            state = State.of(state)
            hx = (state[0], state[1]) if lstm else state[0]
        if model.training and awd.active(model.config):  # regularisers: layer by layer
            raw, out, hx = awd.recurrent_stack(model, ids, hx)  # (B, T, H) each
        else:
            x = model.embedding(ids)  # (B, T, E)
            raw, hx = model.rnn(x, hx)  # raw (B, T, H)
            out = raw
        out = model.dropout(out)
        if activations is not None:
            activations += [raw, out]
        if model.projection is not None:
            out = model.projection(out)  # (B, T, E)
        return out, State(hx if lstm else (hx,))

    def stepper(self, model: nn.Module, batch_size: int) -> TorchStepper | NumpyStepper | None:
        from .recurrent_steppers import make_stepper

        return make_stepper(model, batch_size)

    def any_stepper(self, model: nn.Module) -> TorchStepper:
        from .recurrent_steppers import TorchStepper

        return TorchStepper(model)
