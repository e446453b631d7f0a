"""Where and how tensors run: device and precision resolution, TF32, synchronisation, and the
device-level facts the trainer and the generator ask about (fused AdamW, out-of-memory errors).

Generation and serving import this to place a model; none of it imports the trainer, so
``lstmgen generate`` and ``lstmgen serve`` load no training code (issue #11).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from .errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """The device for a ``--device`` value: auto (CUDA, then MPS, then CPU), cpu, cuda[:N], mps.
    A device that is asked for but missing is a ``ConfigError``."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r} (auto, cpu, cuda, cuda:N, mps)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda requested but no CUDA GPU is available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps requested but MPS is not available")
    return device


def resolve_precision(name: str, device: torch.device) -> str:
    """``"bf16"`` or ``"fp32"`` for a TrainConfig ``precision`` on ``device``.

    auto: bf16 on CUDA and on a CPU with bf16 instructions (``cpu_has_native_bf16``: AMX or
    AVX512-BF16), fp32 elsewhere. bf16 means ``torch.autocast(dtype=torch.bfloat16)`` around
    the forward pass and loss (weights, gradients and optimizer stay fp32); note that under any
    autocast PyTorch runs cuDNN RNNs in fp16 (ATen's cudnn/AutocastRNN.cpp), the
    embedding lookup and decoder in bf16. fp32 on CUDA lets matmuls and cuDNN (the LSTM) use
    TF32 tensor cores (``torch.backends.cuda.matmul.allow_tf32`` and
    ``torch.backends.cudnn.allow_tf32``) while the trainer runs; see ``tf32``.

    bf16 on CPU runs oneDNN's bf16 LSTM and matrix products, which pay only on a processor
    with bf16 instructions (``cpu_has_native_bf16``); elsewhere it is emulated, slower than
    fp32, and refused. On an Intel Xeon with AMX tiles, training ran 1.4-2.1x faster at the
    same loss per token, char and word models alike (benchmarks/results/cpu_bf16.json); on an
    AMD EPYC with AVX512-BF16 and no AMX, 1.5-1.8x (cpu_bf16_epyc.json). So auto picks it on
    both. MPS is refused.

    ``torch.backends.cudnn.benchmark`` is left alone: it autotunes convolution algorithms
    only; cuDNN RNNs get their algorithm from fixed heuristics, so it would change nothing."""
    if name == "auto":
        fast = device.type == "cuda" or (device.type == "cpu" and cpu_has_native_bf16())
        return "bf16" if fast else "fp32"
    if name == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
        raise ConfigError(
            "precision bf16 on CPU needs a processor with bf16 instructions (AVX512-BF16 or "
            "AMX), which this one lacks: use --precision auto or fp32"
        )
    if name == "bf16" and device.type not in ("cuda", "cpu"):
        raise ConfigError(
            f"precision bf16 needs a CUDA device or a CPU (this run is on {device.type}):"
            " use --precision auto or fp32"
        )
    return name


def cpu_has_native_bf16() -> bool:
    """Whether this processor multiplies bf16 in hardware (AVX512-BF16 or AMX tiles), as
    PyTorch's CPU dispatch sees it."""
    return cpu_has_amx() or cpu_has_avx512_bf16()


def cpu_has_avx512_bf16() -> bool:
    """Whether this processor has AVX512-BF16 (bf16 dot products; AMD EPYC since Zen 4)."""
    return _cpu_probe("_is_avx512_bf16_supported")


def cpu_has_amx() -> bool:
    """Whether this processor has AMX tiles (Intel Xeon since Sapphire Rapids), where oneDNN
    runs bf16 matrix products several times faster than fp32."""
    return _cpu_probe("_is_amx_tile_supported")


def _cpu_probe(name: str) -> bool:
    """One of ``torch.cpu``'s feature probes; False where this torch lacks it."""
    return bool(getattr(torch.cpu, name, lambda: False)())


@contextlib.contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """On CPU, treat subnormal floats as zero inside the block (FTZ/DAZ), then switch it off.

    Subnormals (below 1.2e-38 in float32) take a slow path on x86: training a sha-lstm on CPU
    produced enough of them to fall from ~8,000 to ~2,400 tokens/s over 450 steps, and with
    this on it kept 8,000-10,000 (2x384, tiny-shakespeare, issue #12). No language model needs
    values that small."""
    global _flush_depth
    if device.type != "cpu":
        yield
        return
    if _flush_depth == 0:
        torch.set_flush_denormal(True)
    _flush_depth += 1  # nested blocks (an evaluation inside fit) keep it on until the outer ends
    try:
        yield
    finally:
        _flush_depth -= 1
        if _flush_depth == 0:
            torch.set_flush_denormal(False)


_flush_depth = 0


@contextlib.contextmanager
def tf32(enabled: bool) -> Iterator[None]:
    """Let fp32 matmuls and cuDNN use TF32 inside the block; restore the flags after it.

    Uses the legacy ``allow_tf32`` flags, which set PyTorch's newer ``fp32_precision`` settings
    too (setting them also repairs a state where the two APIs disagree)."""
    if not enabled:
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    try:
        saved: tuple[bool, bool] | None = (matmul.allow_tf32, cudnn.allow_tf32)
    except RuntimeError:  # flags set through a mix of old and new APIs: leave ours set after
        saved = None
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    try:
        yield
    finally:
        if saved is not None:
            matmul.allow_tf32, cudnn.allow_tf32 = saved


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def fused_adamw(device: torch.device) -> bool | None:
    """Whether AdamW runs fused here: on CUDA and CPU, where one kernel updates every tensor (on
    CPU about 3x faster than the default foreach step: benchmarks/train_throughput.py)."""
    return device.type in ("cuda", "cpu") or None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator failure: ``torch.OutOfMemoryError`` on CUDA, the
    RuntimeError of PyTorch's CPU allocator (``DefaultCPUAllocator: can't allocate memory``),
    or MPS's."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    text = str(exc)
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text
    )


# Below this many time steps PyTorch's native CPU RNN kernel beats its oneDNN kernel (the
# default), whose fixed cost is about 4 ms a call. 2x256 LSTM, batch 1, one thread, on a 2-core
# AMD EPYC with torch 2.13, ms per call, oneDNN / native: 1 step 4.5 / 0.46, 8 steps 5.0 / 2.0,
# 32 steps 5.0 / 6.5, 512 steps 38 / 63. (At batch 32, one step: 3.7 / 2.8.)
NATIVE_RNN_BELOW = 24


@contextlib.contextmanager
def rnn_kernels(device: torch.device, steps: int, batch: int = 1) -> Iterator[None]:
    """Run the next model call on the faster CPU RNN kernel for ``steps`` x ``batch`` tokens.

    Both kernels compute the same function; only speed differs. Above ~24 tokens per call
    (a long prompt, or a step of a large batch) oneDNN's fixed cost pays off and it is kept.
    The switch is process-wide (``torch.backends.mkldnn.enabled``), held for one call only."""
    if (
        device.type != "cpu"
        or steps * batch >= NATIVE_RNN_BELOW
        or not torch.backends.mkldnn.enabled
    ):
        yield
        return
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = True
