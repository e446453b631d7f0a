"""One writer per run folder: an exclusive OS lock on ``RUN/train.lock``, and the clean-up of
temporary files that a killed writer left behind.

Two ``lstmgen train`` processes writing into the same folder used to finish "successfully" with
one run's weights and the other's metrics interleaved (issue #10). Training (create and resume)
now holds ``flock(LOCK_EX)`` on the lock file for as long as it writes. The kernel drops the lock
when the process dies, however it dies (SIGKILL included), so a lock is never stale; the pid in
the file is only for the message. Readers (generate, eval, serve, info) never look at it.

Within one process the lock is re-entrant (a count per folder): a script may hold a resumed
``Trainer`` and resume the same folder again, as the tests do; the guarantee is between processes.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

from .errors import TrainingError

try:
    import fcntl
except ImportError:  # Windows: no flock; training runs unlocked there
    fcntl = None  # type: ignore[assignment]

LOCK_FILE = "train.lock"
_held: dict[Path, tuple[IO[str], int]] = {}  # folder -> (open lock file, holders in this process)


class RunLock:
    """The exclusive lock on one run folder; ``release`` is idempotent.

    >>> lock = RunLock.acquire("runs/poems")  # doctest: +SKIP
    >>> lock.release()  # doctest: +SKIP
    """

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.held = True

    @classmethod
    def acquire(cls, run_dir: str | Path) -> RunLock:
        """Lock ``run_dir`` (created if missing) or raise ``TrainingError`` naming the holder."""
        shown, run_dir = run_dir, Path(run_dir).resolve()
        if run_dir in _held:
            f, count = _held[run_dir]
            _held[run_dir] = (f, count + 1)
            return cls(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        # No O_TRUNC: the holder's pid must survive a failed attempt to take the lock.
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        f = os.fdopen(fd, "r+", encoding="utf-8")
        if fcntl is not None:
            try:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                pid = f.read().strip() or "unknown"
                f.close()
                raise TrainingError(
                    f"{shown} is being trained by another process (pid {pid})"
                ) from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        _held[run_dir] = (f, 1)
        return cls(run_dir)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        f, count = _held.pop(self.run_dir)
        if count > 1:
            _held[self.run_dir] = (f, count - 1)
        else:
            f.close()  # closing the descriptor drops the flock


def remove_stale_temp_files(run_dir: str | Path) -> list[Path]:
    """Delete the temporary files that a writer killed mid-write left in a run folder.

    Every writer uses a ``*.tmp`` name beside its target (``files.atomic_write``:
    ``.NAME.XXXX.tmp``; the token cache: ``data/SPLIT.tmp``; the metrics rewrite:
    ``metrics.tmp``), so with the lock held every ``*.tmp`` there is a leftover: a full-size
    trainer state can be one. Returns what was removed."""
    run_dir = Path(run_dir)
    removed = []
    for folder in (run_dir, run_dir / "trainer", run_dir / "data"):
        if not folder.is_dir():
            continue
        for path in folder.glob("*.tmp"):  # pathlib's * matches dot-files too
            if path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
