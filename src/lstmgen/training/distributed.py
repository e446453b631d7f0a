"""Multi-process training under ``torchrun`` (DistributedDataParallel); a no-op for one process.

lstmgen launches nothing itself: ``torchrun --nproc-per-node N -m lstmgen train ...`` starts
the processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous variables.
Without them (a plain ``lstmgen train``) every method here does nothing, for one process.

The row layout. With ``--batch-size B`` rows per micro-step, ``--grad-accum K`` micro-steps per
optimizer step and W processes, the training tokens are cut into R = W*K*B streams
(``data.batchify``, the classic PTB layout) and each process takes a contiguous block of them::

    stream rows:  0 .. B-1 | B .. 2B-1 | ... | (K-1)B .. KB-1 | KB .. 2KB-1 | ...
                  micro 0  | micro 1    | ... | micro K-1      | micro 0 ...
                  \\______________ process 0 ________________/  \\__ process 1 __...

A row is one contiguous stream with its own carried hidden state whichever process reads it, so
the carried state of row b is the same as in a 1-process run. Each micro-step's loss is the mean
over its B*T tokens divided by K, and DDP averages the gradients over the W processes: the
gradient is the mean over all R*T tokens, the one of a 1-process run with ``--batch-size R``
(tests/test_distributed.py: equal weights after 20 steps, up to float32 rounding).

Every process takes the same number of steps (each has R/W rows of the same length). Stopping
is decided by the first process (rank 0) and broadcast at sync points (log and evaluation
steps, and the step and epoch limits that every process reaches together), so no process waits
forever in a collective. Only rank 0 tokenizes, evaluates, saves, logs, samples and plots.

Process group: ``cpu:gloo,cuda:nccl`` where CUDA exists (DDP's all-reduce of CUDA gradients over
NCCL; the small control messages stay on the CPU over gloo and never wait for the GPU), gloo
alone elsewhere. A collective that waits longer than ``LSTMGEN_DIST_TIMEOUT`` seconds
(default 900: room for rank 0's evaluation while the others wait) fails, and a lost process
makes the others stop with one line (``failures``), never hang.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from ..errors import CheckpointError, ConfigError, TrainingError
from ..runtime import resolve_device
from ..state import State

DEFAULT_TIMEOUT_S = 900
# How long the others wait for rank 0 to tokenize a new corpus (hours for a large one).
PREPARE_TIMEOUT = timedelta(hours=24)
REASON_BYTES = 64  # a stop reason travels as this many UTF-8 bytes


def launched() -> bool:
    """Whether torchrun (or a scheduler doing what it does) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def timeout_s() -> float:
    value = os.environ.get("LSTMGEN_DIST_TIMEOUT", "")
    try:
        return float(value) if value else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ConfigError(f"LSTMGEN_DIST_TIMEOUT must be seconds, got {value!r}") from None


@dataclass
class Dist:
    """This process's place in the run: ``rank`` of ``world`` (``active``: a process group is up,
    even for a world of one, so DDP wraps the model)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    active: bool = False
    released: bool = False  # rank 0 has told the others whether the run folder is ready
    prepare_group: Any = None  # gloo, PREPARE_TIMEOUT: the wait for rank 0's preparation

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # --- placement ----------------------------------------------------------------------------

    def device(self, name: str) -> torch.device:
        """``--device`` for this process: ``auto`` / ``cuda`` become ``cuda:LOCAL_RANK`` under
        torchrun (one GPU per process); an explicit ``cuda:N`` is kept. On CPU each process
        gets one thread unless OMP_NUM_THREADS says otherwise: N processes that each start one
        thread per core would oversubscribe the cores, and every all-reduce waits for the
        slowest process."""
        device = resolve_device(name)
        if not self.active:
            return device
        if device.type == "cuda":
            if device.index is None:
                if self.local_rank >= torch.cuda.device_count():
                    raise ConfigError(
                        f"local rank {self.local_rank} has no GPU: this machine has "
                        f"{torch.cuda.device_count()} (lower --nproc-per-node)"
                    )
                device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        elif device.type == "cpu":
            if "OMP_NUM_THREADS" not in os.environ:
                torch.set_num_threads(1)
        else:
            raise ConfigError(
                f"multi-process training runs on CPU (gloo) or CUDA (NCCL), not {device.type}"
            )
        return device

    def shard(self, streams: np.ndarray) -> np.ndarray:
        """This process's block of the (R, n) stream rows (see the module docstring)."""
        rows = streams.shape[0] // self.world
        return streams[self.rank * rows : (self.rank + 1) * rows]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """DDP around ``model`` (which stays the one to save and evaluate, as nanoGPT does).
        ``device_ids=None``: the module lives on one device and takes its inputs there, so DDP
        passes the ``State`` argument through untouched."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=None)

    def no_sync(self, wrapped: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager:
        """Skip the gradient all-reduce on every micro-step but the last of an optimizer step."""
        if last or not self.active:
            return contextlib.nullcontext()
        return wrapped.no_sync()  # type: ignore[operator]

    # --- agreement ----------------------------------------------------------------------------

    def agree(self, reason: str | None) -> str | None:
        """Rank 0's stop reason (None: go on), on every process."""
        if not self.active or self.world == 1:
            return reason
        data = (reason or "").encode()[:REASON_BYTES]
        buf = torch.zeros(REASON_BYTES, dtype=torch.uint8)
        buf[: len(data)] = torch.tensor(list(data), dtype=torch.uint8)
        dist.broadcast(buf, src=0)
        text = bytes(buf.tolist()).rstrip(b"\0").decode()
        return text or None

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the processes (the training loss at a log step: every
        process sees the same number, so all of them see a divergence together)."""
        if not self.active or self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(t)
        return float(t.item()) / self.world

    def barrier(self) -> None:
        """Wait for every process (the end of ``fit``: the others would otherwise exit while
        rank 0 still writes, and a process that leaves the group while a peer is busy can
        abort in gloo's threads)."""
        if self.active and self.world > 1:
            dist.barrier()

    def release(self, ok: bool) -> None:
        """Rank 0: the run folder is ready (or not: ``ok=False``); the others wait for this in
        ``wait_for_first``. Once only."""
        if not self.active or self.released:
            return
        self.released = True
        if self.world > 1:
            dist.broadcast(torch.tensor([int(ok)]), src=0, group=self.prepare_group)

    def wait_for_first(self) -> None:
        """The others: wait until rank 0 has tokenized and written the run folder."""
        flag = torch.zeros(1, dtype=torch.long)
        dist.broadcast(flag, src=0, group=self.prepare_group)
        self.released = True
        if not flag.item():
            raise TrainingError(
                f"process {self.rank}: the first process (rank 0) could not start the run "
                "(its error is above)"
            )

    # --- the trainer state ----------------------------------------------------------------

    def _all_gather(self, t: torch.Tensor) -> list[torch.Tensor]:
        # NCCL moves CUDA tensors, gloo CPU ones: each tensor travels where it lives
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t.contiguous())
        return parts

    def gather_state(self, state: State | None) -> State | None:
        """Every process's carried state, joined along the batch in rank order: the state of
        all R rows, as a 1-process run with batch R would hold it. A collective."""
        if state is None or not self.active or self.world == 1:
            return state
        parts = [self._all_gather(t) for t in state]  # parts[i][r]: part i of rank r
        return State.cat([type(state)(p[r] for p in parts) for r in range(self.world)])

    def shard_state(self, state: State | None) -> State | None:
        """This process's rows of a state of all R rows (``gather_state``'s inverse)."""
        if state is None or not self.active or self.world == 1:
            return state
        rows = state.batch_size // self.world
        idx = torch.arange(self.rank * rows, (self.rank + 1) * rows, device=state[0].device)
        return state.select(idx)

    def gather_rng(self, device: torch.device) -> dict[str, torch.Tensor]:
        """Every process's RNG states, (W, S) uint8 each, for the trainer state. A collective."""
        if not self.active or self.world == 1:
            return {}
        out = {"dist.rng.cpu": torch.stack(self._all_gather(torch.get_rng_state()))}
        if device.type == "cuda":
            mine = torch.cuda.get_rng_state(device).to(device)
            out["dist.rng.cuda"] = torch.stack(self._all_gather(mine)).cpu()
        return out

    def metadata(self) -> dict[str, str]:
        return {"world_size": str(self.world)}

    def check_world(self, path: Path, meta: dict[str, str]) -> None:
        """A run resumes with the world size it was saved with: the rows of each process, and
        the carried state and RNG of each, depend on it."""
        saved = meta.get("world_size", "1")
        if saved != str(self.world):
            plural = "" if saved == "1" else "es"
            how = "plain lstmgen train" if saved == "1" else "torchrun --nnodes x --nproc-per-node"
            raise CheckpointError(
                f"{path.parent.parent} was trained by {saved} process{plural} and this run has "
                f"{self.world}: resume it with {saved} ({how})"
            )

    def take_rng(self, path: Path, tensors: dict[str, torch.Tensor], device: torch.device) -> None:
        """Restore this process's RNG states from ``gather_rng``'s tensors (removed from
        ``tensors``, which the trainer state's checks then see without them)."""
        cpu, cuda = tensors.pop("dist.rng.cpu", None), tensors.pop("dist.rng.cuda", None)
        if not self.active or self.world == 1:
            return
        want = torch.get_rng_state().numel()
        if cpu is None or cpu.dtype != torch.uint8 or tuple(cpu.shape) != (self.world, want):
            raise CheckpointError(f"{path}: dist.rng.cpu is missing or not ({self.world}, {want})")
        torch.set_rng_state(cpu[self.rank].clone())  # own storage: a view confuses it
        if cuda is not None and device.type == "cuda":
            torch.cuda.set_rng_state(cuda[self.rank].clone(), device)

    # --- failures -------------------------------------------------------------------------

    @contextlib.contextmanager
    def failures(self, out_dir: str | Path) -> Iterator[None]:
        """A collective that fails (another process died, or did not answer within the
        timeout) becomes one ``TrainingError`` line instead of a traceback or a hang."""
        try:
            yield
        except RuntimeError as exc:  # DistBackendError and gloo's errors are RuntimeErrors
            if not self.active or not _collective_failure(exc):
                raise
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc)
            raise TrainingError(
                f"process {self.rank} of {self.world} lost another training process ({first}):"
                f" the last checkpoint in {out_dir} is kept; resume with the same torchrun"
                f" command and --resume {out_dir}"
            ) from None


def _collective_failure(exc: BaseException) -> bool:
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    text = str(exc).lower()
    return any(
        word in text
        for word in ("gloo", "nccl", "connection", "timed out", "timeout", "peer", "socket")
    )


_CURRENT: Dist | None = None  # the process group is process-wide (torch's), and so is this


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def init() -> Dist:
    """This process's ``Dist``; under torchrun, joins the process group the first time."""
    global _CURRENT
    if _CURRENT is not None:
        return _CURRENT
    if not launched():
        _CURRENT = Dist()
        return _CURRENT
    if not dist.is_initialized():
        backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s()))
        # Leave the group at exit rather than in the interpreter's teardown. (The SIGABRT of a
        # rank exiting while rank 0 still wrote is prevented by the barrier at the end of fit.)
        atexit.register(_leave)
    _CURRENT = Dist(
        rank=dist.get_rank(),
        world=dist.get_world_size(),
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        active=True,
        prepare_group=dist.new_group(backend="gloo", timeout=PREPARE_TIMEOUT),
    )
    return _CURRENT


def led_by_first(method: Any) -> Any:
    """For ``Trainer.create`` / ``Trainer.resume``: rank 0 runs the method (tokenizes, writes
    the run folder, takes the run lock) and then releases the others, which wait for that and
    join the run with ``cls._follow`` (reading what rank 0 wrote, writing nothing). A failure
    on rank 0 stops the others with one line, never a hang."""

    @functools.wraps(method)
    def wrapper(cls: Any, out_dir: str | Path, *args: Any, **kwargs: Any) -> Any:
        d = init()
        if not d.active:
            return method(cls, out_dir, *args, **kwargs)
        if not d.is_main:
            with d.failures(out_dir):
                d.wait_for_first()
                return cls._follow(out_dir, new=method.__name__ == "create")
        try:
            with d.failures(out_dir):
                trainer = method(cls, out_dir, *args, **kwargs)
        except BaseException:
            d.release(False)
            raise
        d.release(True)
        return trainer

    return wrapper
