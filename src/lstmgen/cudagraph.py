"""Decoding blocks replayed from a CUDA graph.

A batch-1 decoding step is a few dozen tiny kernels; launched one by one from Python the GPU
waits on the CPU for each (eager ``nn.LSTM`` stepping reaches ~1,600 tokens/s on an H200).
``GraphDecoder`` captures ``decode.decode_block`` — K times: sample (penalty, temperature,
top-k, top-p, inverse-CDF draw), embedding, recurrent layers, decoder — into one CUDA graph
(Nvidia, "Getting started with CUDA Graphs", 2019; PyTorch ``torch.cuda.graph``). A replay
launches the whole block at once; the host then copies the K tokens back in one transfer.

Only the uniforms are drawn outside the graph (one kernel per block, from the caller's
generator), so a graph holds no generator state and the result equals the eager
``decode_block`` with the same uniforms: the same kernels run in the same order.

Buffers the graph reads and writes live at fixed addresses: the logits and state carried from
one block to the next, the repetition-penalty mask and the uniforms. An attention state
(models/attention.py) is captured the same way: its memory has the same (B, M, H) shape at every
step (masked where a row holds fewer entries) and its int64 ``length`` is copied like the rest.
"""

from __future__ import annotations

import warnings

import torch

from .config import GenerationConfig
from .decode import EagerDecoder, Step, block_size, decode_block
from .models.base import Model, StepFn
from .state import State


class GraphDecoder:
    """K decoding steps for B sequences as one CUDA graph.

    >>> dec = GraphDecoder(step, cfg, logits, state, seen, block=16)  # doctest: +SKIP
    >>> tokens = dec.run(generator)  # (B, 16) on the GPU  # doctest: +SKIP
    """

    def __init__(
        self,
        step: StepFn,
        cfg: GenerationConfig,
        logits: torch.Tensor,
        state: State,
        seen: torch.Tensor | None,
        block: int,
    ):
        B = logits.shape[0]
        self.logits = logits.clone()  # (B, V) carried between blocks
        self.state = state.clone()  # B sequences, at addresses the graph keeps
        self.seen = seen  # (B, V) bool, updated in place by the graph
        self.u = torch.zeros(block, B, dtype=torch.float64, device=logits.device)  # (K, B)
        with torch.cuda.device(logits.device):  # streams and replays on the model's GPU
            caller = torch.cuda.current_stream()
            try:
                self._capture(step, cfg, block)
            except BaseException:
                # A capture that fails in torch.cuda.graph's exit leaves its side stream
                # current; the caller decodes eagerly next, on its own stream.
                torch.cuda.set_stream(caller)
                raise

    def _capture(self, step: StepFn, cfg: GenerationConfig, block: int) -> None:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            # Warm-up on copies (cuBLAS/cuDNN create handles and workspaces on first use, which
            # capture forbids); the same stream is used for the capture (pytorch#187745).
            scratch = None if self.seen is None else self.seen.clone()
            decode_block(step, self.logits.clone(), self.state.clone(), self.u, cfg, scratch)
        stream.synchronize()
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph, stream=stream):
            self.tokens, logits_out, state_out = decode_block(
                step, self.logits, self.state, self.u, cfg, self.seen
            )  # tokens (B, K)
            self.logits.copy_(logits_out)
            self.state.copy_(state_out)
        torch.cuda.current_stream().wait_stream(stream)

    def run(self, generator: torch.Generator, left: int | None = None) -> torch.Tensor:
        """Decode the next block; returns the tokens (B, K), valid until the next call. A drop-in
        for ``decode.EagerDecoder.run``: ``left`` is ignored, a replay is always K steps."""
        self.u.uniform_(generator=generator)  # same draws as sampling.uniforms((K, B), ...)
        with torch.cuda.device(self.u.device):
            self.graph.replay()
        return self.tokens


def block_decoder(
    model: Model,
    cfg: GenerationConfig,
    logits: torch.Tensor,
    state: State,
    seen: torch.Tensor | None,
    cuda_graphs: bool = True,
) -> EagerDecoder | GraphDecoder:
    """The decoder for B = ``len(logits)`` sequences primed to ``logits`` (B, V) and ``state``:
    a ``GraphDecoder`` on CUDA (unless ``cuda_graphs`` is off, the run is shorter
    than a block, or capture fails), else an ``EagerDecoder``. Both have ``run`` and ``logits``.
    """
    B, device = logits.shape[0], logits.device
    step = Step(model, B)
    K = block_size(device, B)
    if device.type == "cuda" and cuda_graphs and cfg.max_new_tokens > K:
        try:
            return GraphDecoder(step, cfg, logits, state, seen, block=K)
        except RuntimeError as err:  # a PyTorch/driver that cannot capture this step
            warnings.warn(f"CUDA graph capture failed, decoding eagerly: {err}", stacklevel=3)
    return EagerDecoder(step, cfg, logits, state, seen, block=K)
