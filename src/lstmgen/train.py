"""The old home of the trainer, kept for imports written against it: the code now lives in
``training/`` (the loop, schedule, optimizer, state, windows), ``runtime.py`` (devices,
precision) and ``rundir.py`` (the run folder's files)."""

from .data import get_window as window_tensors  # noqa: F401
from .rundir import STATE_FILE, plot_metrics, read_metrics  # noqa: F401
from .runtime import (  # noqa: F401
    fused_adamw,
    is_out_of_memory,
    resolve_device,
    resolve_precision,
    synchronize,
    tf32,
)
from .training.optim import clip_gradients  # noqa: F401
from .training.trainer import RESUMABLE, Callback, Trainer, memory_hint  # noqa: F401
from .training.windows import DEVICE_STREAMS_MAX_BYTES, Windows  # noqa: F401
