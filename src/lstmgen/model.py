"""The PyTorch recurrent language model.

Dimensions: B batch, T time, V vocabulary, E embedding, H hidden, L layers.

    ids (B, T) -> embedding (B, T, E) -> LSTM/GRU/RNN x L (B, T, H) -> dropout
               -> [projection H -> E when tied and E != H] -> decoder -> logits (B, T, V)

The recurrent state goes in and comes out: ``logits, state = model(ids, state)``. For an LSTM the
state is ``(h, c)``, each (L, B, H); for GRU and RNN it is ``h`` (L, B, H). Nothing is kept on
the module, so one model serves any number of independent sequences.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import load_tensors, load_weights_into, save_model
from .config import GenerationConfig, ModelConfig
from .modeldir import WEIGHTS, check_weights_file, read_model_meta
from .state import State

_RNN_CLASSES = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class LanguageModel(nn.Module):
    """A recurrent language model; ``tokenizer`` and ``generation_config`` travel with it."""

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
        V, E, H, L = config.vocab_size, config.embedding_size, config.hidden_size, config.num_layers
        self.embedding = nn.Embedding(V, E)
        self.rnn = _RNN_CLASSES[config.cell](
            E, H, num_layers=L, batch_first=True, dropout=config.dropout if L > 1 else 0.0
        )
        self.dropout = nn.Dropout(config.dropout)
        self.projection = nn.Linear(H, E, bias=False) if config.tie_weights and E != H else None
        self.decoder = nn.Linear(E if config.tie_weights else H, V)
        if config.tie_weights:
            self.decoder.weight = self.embedding.weight  # Press & Wolf 2017, Inan et al. 2017
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Small embeddings/decoder (as in pytorch/examples word_language_model): loss at
        # initialisation is close to ln(V).
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        if not self.config.tie_weights:
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)
        if self.config.cell == "lstm":
            # Forget-gate bias 1 (Gers et al. 2000; Jozefowicz et al. 2015): remember by default.
            # PyTorch's gate order is i, f, g, o and it adds b_ih + b_hh, so set the sum to 1.
            H = self.config.hidden_size
            for name, p in self.rnn.named_parameters():
                if name.startswith("bias_"):
                    with torch.no_grad():
                        p[H : 2 * H] = 1.0 if name.startswith("bias_ih") else 0.0

    @property
    def device(self) -> torch.device:
        return self.embedding.weight.device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def init_state(self, batch_size: int) -> State:
        """Zero state for ``batch_size`` sequences: (h, c) for LSTM, h otherwise, each (L, B, H)."""
        L, H = self.config.num_layers, self.config.hidden_size
        h = torch.zeros(L, batch_size, H, device=self.device, dtype=self.embedding.weight.dtype)
        return (h, torch.zeros_like(h)) if self.config.cell == "lstm" else h

    def forward(self, ids: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        x = self.embedding(ids)  # (B, T, E)
        out, state = self.rnn(x, state)  # out (B, T, H)
        out = self.dropout(out)
        if self.projection is not None:
            out = self.projection(out)  # (B, T, E)
        return self.decoder(out), state  # logits (B, T, V)

    def stepper(self, batch_size: int = 1) -> Any:
        """A function ``logits (B, V), state = step(ids (B,), state)`` for one decoding step.

        Same function as ``forward`` on one token (eval mode: no dropout), with the gate matmuls
        fused, on the fastest path for ``batch_size`` on this device (see steppers.py). The
        weights are copied when it is made, so make a new one after training changes them."""
        from .steppers import TorchStepper, make_stepper

        return make_stepper(self, batch_size) or TorchStepper(self)

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
        from .generate import stream_text

        texts = [""] * n
        for event in stream_text(self, [prompt] * n, **options):
            texts[event.index] += event.text
        return texts


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LanguageModel:
    """``LanguageModel.from_pretrained``: the JSON parts and the weights' header are checked
    before the model is built (modeldir.py), the tensors before they are loaded."""
    path = Path(path)
    config, tokenizer, gen = read_model_meta(path)
    check_weights_file(path / WEIGHTS, config)
    model = LanguageModel(config, tokenizer, gen)
    load_weights_into(model, load_tensors(path / WEIGHTS), path / WEIGHTS)
    model.eval()
    return model.to(device)
