"""The recurrent stack's one-token step on CPU with int8 weights (``lstmgen quantize``).

Same step as recurrent_steppers.TorchStepper (gate order, GRU's separate products), but each
matrix-vector product runs through PyTorch's dynamic int8 linear (fbgemm / x86 kernels): the
activations are quantized to 8 bits per call, multiplied with the int8 weights in int32, and
scaled back per output channel. The weights are the int8 matrices and scales the directory holds
(``LanguageModel.int8``), not a re-quantization of the float copies.

Why these paths (benchmarks/quantize.py, 3x512 char LSTM, one thread, 2-core Intel Xeon under
load): onnxruntime's int8 graph (``OrtInt8Stepper``, one C++ call per token) decodes 1.35x as
fast as this module's torch.ao path at batch 1 and 1.19x at batch 64 (1.47x / 1.43x in an
earlier run), so it is used where the onnx extra is installed; ``Int8Stepper`` is the fallback.
A NumPy int8 path has no integer BLAS to call (a (1, 1024) x (1024, 2048) int8 product: 47.6 ms,
against 1.2 ms in float32).

Replacement plan: ``torch.ao.nn.quantized.dynamic`` (and the quantized tensor it is built from)
is deprecated (PyTorch 2.13 warns, pytorch/pytorch#184982) in favour of torchao. When it goes,
swap ``_int8_linear`` for torchao's int8 dynamic-activation / int8-weight linear, or for
onnxruntime's MatMulInteger through the onnx backend; nothing else here depends on it.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from ..state import State

if TYPE_CHECKING:
    from .base import Model

# Above this batch, nn.LSTM on the dequantized weights is as fast (its per-call setup is
# amortised); measured with benchmarks/quantize.py.
INT8_BELOW = 128


def _int8_linear(q: Tensor, scale: Tensor, bias: Tensor | None) -> torch.nn.Module:
    """A dynamic int8 linear computing ``x @ (q * scale[:, None]).T + bias``."""
    from torch.ao.nn.quantized.dynamic import Linear

    out_features, in_features = q.shape
    zeros = torch.zeros(out_features, dtype=torch.long)
    with warnings.catch_warnings():  # the deprecation notice: see the replacement plan above
        warnings.simplefilter("ignore")
        lin = Linear(in_features, out_features, bias_=bias is not None, dtype=torch.qint8)
        qw = torch._make_per_channel_quantized_tensor(q, scale.double(), zeros, 0)
        lin.set_weight_bias(qw, None if bias is None else bias.detach().float().contiguous())
    return lin


class OrtInt8Stepper:
    """The same step as ``Int8Stepper`` as one onnxruntime call: the step graph of
    export/onnx_graph.py with the directory's int8 matrices (MatMulInteger). The fastest CPU
    path measured (benchmarks/quantize.py): one call into C++ per token instead of ~40 PyTorch
    op dispatches. Used when onnx and onnxruntime are installed (``lstmgen[onnx]``)."""

    batch_below = INT8_BELOW

    def __init__(self, model: Model):
        import onnxruntime as ort

        from ..export.onnx_graph import state_names, step_model

        with torch.no_grad():
            weights = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
        int8 = {k: (q.numpy(), s.numpy()) for k, (q, s) in model.int8.items()}
        graph = step_model(model.config, weights, int8)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1  # batch-1 decoding: threads cost more than they give
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(
            graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.names = state_names(model.config.cell)

    def __call__(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        feed = {n: p.detach().numpy() for n, p in zip(self.names, State.of(state), strict=True)}
        feed["ids"] = ids.numpy()
        logits, *parts = self.session.run(None, feed)
        return torch.from_numpy(logits), State(tuple(torch.from_numpy(p) for p in parts))


def int8_stepper(model: Model) -> OrtInt8Stepper | Int8Stepper:
    """onnxruntime's int8 step where installed, else PyTorch's."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return Int8Stepper(model)
    return OrtInt8Stepper(model)


class Int8Stepper:
    """One-token step with int8 weight matrices on CPU: ids (B,), State -> logits (B, V), State."""

    batch_below = INT8_BELOW

    def __init__(self, model: Model):
        cfg, int8 = model.config, model.int8
        self.cell, self.H = cfg.cell, cfg.hidden_size
        params = dict(model.named_parameters())

        def linear(name: str, bias: str | None) -> torch.nn.Module:
            b = None if bias is None else params[bias]
            if name in int8:
                return _int8_linear(*int8[name], b)
            lin = torch.nn.Linear(1, 1, bias=b is not None)  # a float matrix left as it was
            lin.weight, lin.bias = params[name], b
            return lin

        layers = range(cfg.num_layers)
        self.ih = [linear(f"rnn.weight_ih_l{k}", f"rnn.bias_ih_l{k}") for k in layers]
        self.hh = [linear(f"rnn.weight_hh_l{k}", f"rnn.bias_hh_l{k}") for k in layers]
        proj = model.projection
        self.projection = None if proj is None else linear("projection.weight", None)
        decoder = "embedding.weight" if cfg.tie_weights else "decoder.weight"
        self.decoder = linear(decoder, "decoder.bias")
        self.embedding = int8.get("embedding.weight")  # (int8 (V, E), scales (V,)) or None
        self.embedding_f = params["embedding.weight"].detach()

    def embed(self, ids: Tensor) -> Tensor:
        if self.embedding is None:
            return F.embedding(ids, self.embedding_f)  # (B, E)
        q, s = self.embedding
        return q[ids].float() * s[ids, None]  # (B, E)

    @torch.inference_mode()
    def __call__(self, ids: Tensor, state: State) -> tuple[Tensor, State]:
        H = self.H
        x = self.embed(ids)  # (B, E)
        state = State.of(state)
        h_all, c_all = state[0], state[1] if self.cell == "lstm" else None
        hs, cs = [], []
        for k in range(len(self.ih)):
            h = h_all[k]  # (B, H)
            gi, gh = self.ih[k](x), self.hh[k](h)  # (B, G*H) each
            if self.cell == "lstm":
                gates = gi + gh
                i, f = torch.sigmoid(gates[:, :H]), torch.sigmoid(gates[:, H : 2 * H])
                o = torch.sigmoid(gates[:, 3 * H :])
                c = f * c_all[k] + i * torch.tanh(gates[:, 2 * H : 3 * H])
                x = o * torch.tanh(c)  # (B, H)
                cs.append(c)
            elif self.cell == "gru":
                rz = torch.sigmoid(gi[:, : 2 * H] + gh[:, : 2 * H])
                r, z = rz[:, :H], rz[:, H:]
                n = torch.tanh(gi[:, 2 * H :] + r * gh[:, 2 * H :])
                x = (1 - z) * n + z * h
            else:
                x = torch.tanh(gi + gh)
            hs.append(x)
        if self.projection is not None:
            x = self.projection(x)  # (B, E)
        logits = self.decoder(x)  # (B, V)
        h_new = torch.stack(hs)  # (L, B, H)
        return logits, State((h_new, torch.stack(cs)) if self.cell == "lstm" else (h_new,))
