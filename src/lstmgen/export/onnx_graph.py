"""ONNX graphs of the recurrent stack, built node by node from its weights (NumPy, no torch).

Dimensions: B batch (dynamic), T time (dynamic), V vocabulary, E embedding, H hidden, L layers.

  step.onnx   ids (B,) int64, state_0 (L, B, H) [, state_1 (L, B, H)]
              -> logits (B, V), state_0_out [, state_1_out]
  prime.onnx  ids (B, T) int64, the same state -> logits (B, V) after the last token, new state

The state parts are ``State``'s flat form (state.py): (h, c) for an LSTM, (h,) for a GRU or RNN.
The step graph writes out the same fused step as models/recurrent_steppers.py (one MatMul per
layer over [x, h] for LSTM and RNN; GRU's two products kept apart for its reset gate). The
prime graph runs ONNX's LSTM / GRU / RNN operators over the whole prompt at once, with the
gates reordered from PyTorch's (i, f, g, o / r, z, n) to ONNX's (i, o, f, c / z, r, h).

Built by hand rather than through ``torch.onnx.export``: the export stays torch-free (it runs
where only the onnx extra is installed), the graphs have stable input names, and there is no
exporter version (TorchScript or dynamo, with onnxscript) to track.
"""

from __future__ import annotations

from typing import Any

import numpy as np

OPSET = 17
IR_VERSION = 8
GATES = {"lstm": 4, "gru": 3, "rnn": 1}
# PyTorch's gate blocks -> ONNX's order, per cell (indices of H-sized blocks)
ONNX_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}
Int8 = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (int8 (out, in), scales (out,))


def state_names(cell: str) -> list[str]:
    return ["state_0", "state_1"] if cell == "lstm" else ["state_0"]


class _Graph:
    """Nodes and initializers with generated names."""

    def __init__(self) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.count = 0

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        self.count += 1
        name = name or f"c{self.count}"
        self.inits.append(self.numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, kind: str, *inputs: str, outputs: int = 1, name: str | None = None, **attrs):
        self.count += 1
        outs = (
            [name] if name and outputs == 1 else [f"{kind}{self.count}_{i}" for i in range(outputs)]
        )
        self.nodes.append(self.helper.make_node(kind, list(inputs), outs, **attrs))
        return outs[0] if outputs == 1 else outs

    def model(self, name: str, inputs: list[Any], outputs: list[Any]) -> Any:
        h = self.helper
        graph = h.make_graph(self.nodes, name, inputs, outputs, self.inits)
        # IR version 8 is opset 17's: a newer onnx would stamp its own (onnxruntime-web 1.30
        # refuses IR 12), and nothing here needs more
        model = h.make_model(
            graph, opset_imports=[h.make_opsetid("", OPSET)], ir_version=IR_VERSION
        )
        model.producer_name = "lstmgen"
        return model


def _io(
    config: Any, ids_shape: list[Any], logits_shape: list[Any] | None = None
) -> tuple[list[Any], list[Any]]:
    from onnx import TensorProto, helper

    L, H, V = config.num_layers, config.hidden_size, config.vocab_size
    names = state_names(config.cell)
    inputs = [helper.make_tensor_value_info("ids", TensorProto.INT64, ids_shape)]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, [L, "B", H]) for n in names]
    logits_shape = logits_shape or ["B", V]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, logits_shape)]
    outputs += [
        helper.make_tensor_value_info(n + "_out", TensorProto.FLOAT, [L, "B", H]) for n in names
    ]
    return inputs, outputs


def _decoder(
    g: _Graph,
    config: Any,
    w: dict[str, np.ndarray],
    x: str,
    int8: Int8 | None = None,
    name: str = "logits",
) -> str:
    """x (B, H) -> logits (B, V): [projection] then the decoder (tied: the embedding)."""
    if "projection.weight" in w:
        x = _matmul(g, x, "projection.weight", w, int8)  # (B, E)
    dec = "embedding.weight" if config.tie_weights else "decoder.weight"  # (V, E|H)
    logits = _matmul(g, x, dec, w, int8)  # (B, V)
    return g.op("Add", logits, g.const(w["decoder.bias"]), name=name)


def _layer_index(g: _Graph, state: str, k: int) -> str:
    return g.op("Gather", state, g.const(np.array(k, dtype=np.int64)), axis=0)  # (B, H)


def _stack(g: _Graph, parts: list[str], name: str) -> str:
    axes = g.const(np.array([0], dtype=np.int64))
    return g.op("Concat", *[g.op("Unsqueeze", p, axes) for p in parts], axis=0, name=name)


def _matmul(g: _Graph, x: str, name: str, w: dict[str, np.ndarray], int8: Int8 | None) -> str:
    """x (B, in) @ W.T for the weight ``name`` (out, in): float32, or with the directory's int8
    matrix (activations quantized per call to uint8, products in int32, then scaled back per
    output channel), the pattern onnxruntime's own dynamic quantization produces."""
    if int8 is None or name not in int8:
        return g.op("MatMul", x, g.const(w[name].T))
    q, scale = int8[name]  # (out, in) int8, (out,) float32
    xq, xs, xzp = g.op("DynamicQuantizeLinear", x, outputs=3)  # uint8, scalar scale, zero point
    acc = g.op("MatMulInteger", xq, g.const(np.ascontiguousarray(q.T)), xzp)  # (B, out) int32
    return g.op("Mul", g.op("Cast", acc, to=1), g.op("Mul", xs, g.const(scale)))  # 1: FLOAT


def step_model(config: Any, w: dict[str, np.ndarray], int8: Int8 | None = None) -> Any:
    """The one-token step graph (see the module docstring); with ``int8`` (name -> (int8
    (out, in), float32 scales (out,)), an int8 directory's matrices) those products run in int8,
    input and recurrent products apart (their rows have different scales)."""
    g = _Graph()
    cell, H = config.cell, config.hidden_size
    x = g.op("Gather", g.const(w["embedding.weight"], "embedding"), "ids", axis=0)  # (B, E)
    hs, cs = [], []
    for k in range(config.num_layers):
        w_ih, w_hh = w[f"rnn.weight_ih_l{k}"], w[f"rnn.weight_hh_l{k}"]  # (G*H, E_l), (G*H, H)
        b_ih, b_hh = w[f"rnn.bias_ih_l{k}"], w[f"rnn.bias_hh_l{k}"]
        h = _layer_index(g, "state_0", k)  # (B, H)
        ih, hh = f"rnn.weight_ih_l{k}", f"rnn.weight_hh_l{k}"
        if cell == "gru":
            gi = g.op("Add", _matmul(g, x, ih, w, int8), g.const(b_ih))  # (B, 3H)
            gh = g.op("Add", _matmul(g, h, hh, w, int8), g.const(b_hh))
            sizes = g.const(np.array([H, H, H], dtype=np.int64))
            ir, iz, i_n = g.op("Split", gi, sizes, axis=1, outputs=3)
            hr, hz, h_n = g.op("Split", gh, sizes, axis=1, outputs=3)
            r = g.op("Sigmoid", g.op("Add", ir, hr))
            z = g.op("Sigmoid", g.op("Add", iz, hz))
            n = g.op("Tanh", g.op("Add", i_n, g.op("Mul", r, h_n)))
            # h' = (1 - z) n + z h = n + z (h - n)
            x = g.op("Add", n, g.op("Mul", z, g.op("Sub", h, n)))
        else:
            if int8 is None:
                fused = np.concatenate([w_ih, w_hh], axis=1).T  # (E_l + H, G*H)
                xh = g.op("Concat", x, h, axis=1)  # (B, E_l + H)
                pre = g.op("MatMul", xh, g.const(fused))  # (B, G*H)
            else:
                pre = g.op("Add", _matmul(g, x, ih, w, int8), _matmul(g, h, hh, w, int8))
            pre = g.op("Add", pre, g.const(b_ih + b_hh))
            if cell == "rnn":
                x = g.op("Tanh", pre)
            else:
                sizes = g.const(np.array([H] * 4, dtype=np.int64))
                i, f, gg, o = g.op("Split", pre, sizes, axis=1, outputs=4)
                c_prev = _layer_index(g, "state_1", k)
                c = g.op(
                    "Add",
                    g.op("Mul", g.op("Sigmoid", f), c_prev),
                    g.op("Mul", g.op("Sigmoid", i), g.op("Tanh", gg)),
                )
                x = g.op("Mul", g.op("Sigmoid", o), g.op("Tanh", c))  # (B, H)
                cs.append(c)
        hs.append(x)
    _decoder(g, config, w, x, int8)
    _stack(g, hs, "state_0_out")
    if cs:
        _stack(g, cs, "state_1_out")
    return g.model("lstmgen_step", *_io(config, ["B"]))


def _onnx_gates(cell: str, a: np.ndarray, H: int) -> np.ndarray:
    """PyTorch's stacked gate blocks (G*H, ...) in ONNX's order."""
    return np.concatenate([a[j * H : (j + 1) * H] for j in ONNX_GATE_ORDER[cell]], axis=0)


def prime_model(config: Any, w: dict[str, np.ndarray], all_logits: bool = False) -> Any:
    """The whole-prompt graph: ONNX's recurrent operators over (T, B, ...). ``all_logits``:
    logits (B, T, V) at every position (the server's echo and scoring), not only the last."""
    g = _Graph()
    cell, H = config.cell, config.hidden_size
    x = g.op("Gather", g.const(w["embedding.weight"], "embedding"), "ids", axis=0)  # (B, T, E)
    x = g.op("Transpose", x, perm=[1, 0, 2])  # (T, B, E): ONNX's layout
    axes0, axes1 = g.const(np.array([0], dtype=np.int64)), g.const(np.array([1], dtype=np.int64))
    hs, cs = [], []
    for k in range(config.num_layers):
        W = _onnx_gates(cell, w[f"rnn.weight_ih_l{k}"], H)[None]  # (1, G*H, E_l)
        R = _onnx_gates(cell, w[f"rnn.weight_hh_l{k}"], H)[None]  # (1, G*H, H)
        B = np.concatenate(
            [
                _onnx_gates(cell, w[f"rnn.bias_ih_l{k}"], H),
                _onnx_gates(cell, w[f"rnn.bias_hh_l{k}"], H),
            ]
        )[None]  # (1, 2*G*H)
        h0 = g.op("Unsqueeze", _layer_index(g, "state_0", k), axes0)  # (1, B, H)
        args = [x, g.const(W), g.const(R), g.const(B), "", h0]
        attrs: dict[str, Any] = {"hidden_size": H}
        if cell == "lstm":
            args.append(g.op("Unsqueeze", _layer_index(g, "state_1", k), axes0))
            y, yh, yc = g.op("LSTM", *args, outputs=3, **attrs)
            cs.append(g.op("Squeeze", yc, axes0))
        elif cell == "gru":
            y, yh = g.op("GRU", *args, outputs=2, linear_before_reset=1, **attrs)
        else:
            y, yh = g.op("RNN", *args, outputs=2, activations=["Tanh"], **attrs)
        hs.append(g.op("Squeeze", yh, axes0))  # (B, H)
        x = g.op("Squeeze", y, axes1)  # (T, B, H)
    if all_logits:
        every = _decoder(g, config, w, x, name="logits_tbv")  # (T, B, V)
        g.op("Transpose", every, perm=[1, 0, 2], name="logits")  # (B, T, V)
    else:
        _decoder(g, config, w, hs[-1])
    _stack(g, hs, "state_0_out")
    if cs:
        _stack(g, cs, "state_1_out")
    shape = ["B", "T", config.vocab_size] if all_logits else None
    return g.model("lstmgen_prime", *_io(config, ["B", "T"], shape))
