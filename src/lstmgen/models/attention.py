"""The SHA-LSTM architecture (``arch: "sha-lstm"``, issue #12): an LSTM stack with one attention
head after layer ``a``, attending over a memory of that layer's past (normalised) outputs.

Dimensions: B batch, T window, V vocabulary, E embedding, H hidden, L layers, a the attention
layer, M memory capacity, F boom size, m_b the valid memory entries of row b (0 <= m_b <= M).

    ids (B, T) -> embedding (B, T, E) -> LSTM layers 0..a ("lower")     h (B, T, H)
               -> AttentionBlock(h, memory)                              y (B, T, H)
               -> dropout -> LSTM layers a+1..L-1 ("upper", none when a = L-1)
               -> dropout -> [projection H -> E when tied and E != H] -> decoder -> (B, T, V)

The head follows Merity's SHA-RNN ("Single Headed Attention RNN", 2019): one head, a query
matrix but only per-dimension gates for the keys and values (k_j = n_j * sigmoid(g_k),
v_j = n_j * sigmoid(g_v)), layer norm, an optional feed-forward "boom" sublayer, no positional
encoding (the LSTM carries order). The memory holds n_j = LN(h_j), so one decoding step through
``forward`` is a key/value-cache step: nothing of the past is recomputed.

The state (``AttentionState``) is ``(h (L, B, H), c (L, B, H), memory (B, M, H), length (B,))``:
row b's valid entries are ``memory[b, M - m_b:]`` (right-aligned, oldest first, zeros before),
``length[b] = m_b``. Every row has capacity M, so ``State.cat`` / ``select`` join and split rows
of different lengths unchanged (the server's batcher), and every shape is fixed from step to
step (the CUDA graph). The exact equations are the spec shared with the NumPy reference.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..state import State
from .recurrent import forget_bias_one, init_embedding_and_decoder

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from ..config import ModelConfig
    from .attention_stepper import AttentionStepper


def attention_index(config: ModelConfig) -> int:
    """The 0-based LSTM layer the head follows (a negative ``attention_layer`` counts from the
    end)."""
    return config.attention_layer % config.num_layers


class AttentionState(State):
    """``(h, c, memory, length)``: h, c (L, B, H); memory (B, M, H); length (B,) int64."""

    batch_dims = (1, 1, 0, 0)

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> State:
        """Cast h, c and the memory; ``length`` stays int64 (it counts entries)."""
        h, c, memory, length = self
        return AttentionState(
            (
                h.to(device=device, dtype=dtype),
                c.to(device=device, dtype=dtype),
                memory.to(device=device, dtype=dtype),
                length.to(device=device),
            )
        )


def _available_bytes(device: torch.device) -> int | None:
    """Memory the device has in all (physical RAM on CPU), or None when unknown."""
    try:
        if device.type == "cuda":
            import torch

            return torch.cuda.mem_get_info(device)[1]
        if device.type == "cpu":
            return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, RuntimeError, AttributeError):
        pass
    return None


def check_memory_fits(config: ModelConfig, rows: int, device: torch.device, nbytes: int) -> None:
    """Refuse a memory of ``rows`` sequences that the device cannot hold, naming the sizes."""
    need = rows * config.memory * config.hidden_size * nbytes
    have = _available_bytes(device)
    if have is not None and need > have:
        raise ConfigError(
            f"memory {config.memory:,} x hidden_size {config.hidden_size:,} x {nbytes} bytes x "
            f"{rows:,} sequences = {need / 2**30:.1f} GiB of attention memory, more than the "
            f"{have / 2**30:.1f} GiB of {device.type}: lower --memory or the batch size"
        )


def _lstm_shapes(prefix: str, layers: int, first_in: int, H: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(layers):
        shapes[f"{prefix}.weight_ih_l{k}"] = (4 * H, first_in if k == 0 else H)
        shapes[f"{prefix}.weight_hh_l{k}"] = (4 * H, H)
        shapes[f"{prefix}.bias_ih_l{k}"] = (4 * H,)
        shapes[f"{prefix}.bias_hh_l{k}"] = (4 * H,)
    return shapes


def _block_class() -> type:
    """``AttentionBlock``, defined on first use so that importing this module needs no torch."""
    global _BLOCK
    if _BLOCK is None:
        _BLOCK = _define_block()
    return _BLOCK


_BLOCK: type | None = None


def _define_block() -> type:
    import torch
    import torch.nn.functional as F
    from torch import nn

    class AttentionBlock(nn.Module):
        """One causal attention head over [memory, window], residual, optional boom sublayer."""

        def __init__(self, H: int, boom: int):
            super().__init__()
            self.norm = nn.LayerNorm(H)  # LN_a: what the memory stores
            self.query = nn.Linear(H, H)  # W_q, b_q
            self.key_gate = nn.Parameter(torch.zeros(H))  # g_k: k_j = n_j * sigmoid(g_k)
            self.value_gate = nn.Parameter(torch.zeros(H))  # g_v: v_j = n_j * sigmoid(g_v)
            if boom:
                self.ff_norm = nn.LayerNorm(H)  # LN_f
                self.ff_in = nn.Linear(H, boom)  # W_1, b_1
                self.ff_out = nn.Linear(boom, H)  # W_2, b_2
            else:
                self.ff_norm = self.ff_in = self.ff_out = None

        def reset_parameters(self) -> None:
            self.norm.reset_parameters()
            self.query.reset_parameters()
            nn.init.zeros_(self.key_gate)
            nn.init.zeros_(self.value_gate)
            if self.ff_in is not None:
                self.ff_norm.reset_parameters()
                self.ff_in.reset_parameters()
                # zero output: the sublayer starts as the identity (its input still learns)
                nn.init.zeros_(self.ff_out.weight)
                nn.init.zeros_(self.ff_out.bias)

        def forward(
            self, h: Tensor, memory: Tensor, length: Tensor
        ) -> tuple[Tensor, Tensor, Tensor]:
            """h (B, T, H), memory (B, M, H), length (B,) -> y (B, T, H), memory, length."""
            B, T, H = h.shape
            M = memory.shape[1]
            n = self.norm(h)  # (B, T, H)
            q = self.query(n)  # (B, T, H)
            nm = torch.cat([memory.to(n.dtype), n], dim=1)  # (B, M+T, H): keys/values before gates
            # The gates are per dimension, so they move off the keys and values:
            #   q . (n_j * sig(g_k)) = (q * sig(g_k)) . n_j
            #   sum_j p_j (n_j * sig(g_v)) = sig(g_v) * sum_j p_j n_j
            # and the (B, M+T, H) memory is read as it is, never copied twice more.
            q = q * torch.sigmoid(self.key_gate).to(q.dtype)
            # visible keys (B, 1, T, M+T): row b's valid memory entries, then causal in the window
            pos = torch.arange(M, device=h.device)  # (M,)
            valid = pos[None, :] >= (M - length)[:, None]  # (B, M)
            causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()  # (T, T)
            mask = torch.cat([valid[:, None, :].expand(B, T, M), causal.expand(B, T, T)], dim=2)
            kv = nm.to(q.dtype)[:, None]  # (B, 1, M+T, H)
            o = F.scaled_dot_product_attention(q[:, None], kv, kv, attn_mask=mask[:, None])
            o = o[:, 0] * torch.sigmoid(self.value_gate).to(o.dtype)  # (B, T, H)
            y = h + o.to(h.dtype)  # residual
            if self.ff_in is not None:
                r = self.ff_out(F.gelu(self.ff_in(self.ff_norm(y)), approximate="tanh"))
                y = y + r.to(y.dtype)  # (B, T, H)
            # the last M of [valid memory, n_1..n_T]; the zeros before row b's entries move along
            return y, nm[:, -M:], (length + T).clamp(max=M)

    return AttentionBlock


class ShaLstm:
    """The LSTM stack with one attention head after layer ``attention_layer``."""

    name = "sha-lstm"
    # ``forward`` on one token is already a key/value-cache step (the memory holds the
    # normalised outputs); the written-out step (attention_stepper.py) is faster on CPU up to
    # the batches measured (its batch_below), so decode.Step picks by batch.
    has_stepper = True

    def weight_shapes(self, config: ModelConfig) -> dict[str, tuple[int, ...]]:
        V, E, H, L = config.vocab_size, config.embedding_size, config.hidden_size, config.num_layers
        a, F = attention_index(config), config.boom_size
        shapes: dict[str, tuple[int, ...]] = {"embedding.weight": (V, E)}
        shapes.update(_lstm_shapes("lower", a + 1, E, H))
        shapes.update(_lstm_shapes("upper", L - a - 1, H, H))
        shapes["attention.norm.weight"] = (H,)
        shapes["attention.norm.bias"] = (H,)
        shapes["attention.query.weight"] = (H, H)
        shapes["attention.query.bias"] = (H,)
        shapes["attention.key_gate"] = (H,)
        shapes["attention.value_gate"] = (H,)
        if F:
            shapes["attention.ff_norm.weight"] = (H,)
            shapes["attention.ff_norm.bias"] = (H,)
            shapes["attention.ff_in.weight"] = (F, H)
            shapes["attention.ff_in.bias"] = (F,)
            shapes["attention.ff_out.weight"] = (H, F)
            shapes["attention.ff_out.bias"] = (H,)
        if config.tie_weights and E != H:
            shapes["projection.weight"] = (E, H)
        if not config.tie_weights:  # tied: the decoder's weight is the embedding, stored once
            shapes["decoder.weight"] = (V, H)
        shapes["decoder.bias"] = (V,)
        return shapes

    def check_weight_header(
        self, shapes: dict[str, tuple[int, ...]], config: ModelConfig
    ) -> str | None:
        layers = sum(k.startswith(("lower.weight_hh_l", "upper.weight_hh_l")) for k in shapes)
        if layers != config.num_layers:
            return f"holds {layers} recurrent layer(s), config.json says {config.num_layers}"
        return None

    def build(self, model: nn.Module) -> None:
        from torch import nn

        cfg = model.config
        V, E, H, L = cfg.vocab_size, cfg.embedding_size, cfg.hidden_size, cfg.num_layers
        a = attention_index(cfg)
        model.embedding = nn.Embedding(V, E)
        model.lower = nn.LSTM(
            E, H, num_layers=a + 1, batch_first=True, dropout=cfg.dropout if a > 0 else 0.0
        )
        model.attention = _block_class()(H, cfg.boom_size)
        up = L - a - 1
        model.upper = (
            nn.LSTM(H, H, num_layers=up, batch_first=True, dropout=cfg.dropout if up > 1 else 0.0)
            if up
            else None
        )
        model.dropout = nn.Dropout(cfg.dropout)
        model.projection = nn.Linear(H, E, bias=False) if cfg.tie_weights and E != H else None
        model.decoder = nn.Linear(E if cfg.tie_weights else H, V)
        if cfg.tie_weights:
            model.decoder.weight = model.embedding.weight  # Press & Wolf 2017, Inan et al. 2017
        self.reset_parameters(model)

    def reset_parameters(self, model: nn.Module) -> None:
        init_embedding_and_decoder(model)  # as recurrent.py: small embedding/decoder,
        for rnn in (model.lower, model.upper):  # forget-gate bias 1
            if rnn is not None:
                forget_bias_one(rnn, model.config.hidden_size)
        model.attention.reset_parameters()

    def init_state(self, model: nn.Module, batch_size: int) -> AttentionState:
        """Zeros, length 0: h, c (L, B, H), memory (B, M, H), length (B,) int64."""
        import torch

        cfg = model.config
        L, H, M = cfg.num_layers, cfg.hidden_size, cfg.memory
        w = model.embedding.weight
        check_memory_fits(cfg, batch_size, w.device, w.element_size())
        h = torch.zeros(L, batch_size, H, device=w.device, dtype=w.dtype)  # (L, B, H)
        memory = torch.zeros(batch_size, M, H, device=w.device, dtype=w.dtype)  # (B, M, H)
        length = torch.zeros(batch_size, dtype=torch.long, device=w.device)  # (B,)
        return AttentionState((h, torch.zeros_like(h), memory, length))

    def forward(self, model: nn.Module, ids: Tensor, state: Any) -> tuple[Tensor, AttentionState]:
        import torch

        if state is None:
            state = self.init_state(model, ids.shape[0])
        h0, c0, memory, length = state
        a = attention_index(model.config)
        x = model.embedding(ids)  # (B, T, E)
        out, (hl, cl) = model.lower(x, (h0[: a + 1], c0[: a + 1]))  # (B, T, H)
        out, memory, length = model.attention(out, memory, length.long())  # (B, T, H)
        if model.upper is not None:
            out, (hu, cu) = model.upper(model.dropout(out), (h0[a + 1 :], c0[a + 1 :]))
            hl, cl = torch.cat([hl, hu]), torch.cat([cl, cu])  # (L, B, H)
        out = model.dropout(out)
        if model.projection is not None:
            out = model.projection(out)  # (B, T, E)
        return model.decoder(out), AttentionState((hl, cl, memory, length))  # logits (B, T, V)

    def stepper(self, model: nn.Module, batch_size: int) -> AttentionStepper | None:
        from .attention_stepper import make_stepper

        return make_stepper(model, batch_size)

    def any_stepper(self, model: nn.Module) -> AttentionStepper:
        from .attention_stepper import AttentionStepper

        return AttentionStepper(model)
