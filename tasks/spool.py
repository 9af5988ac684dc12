"""A local spool for events the broker could not take: one file per event, replayed oldest first.

Layout of SPOOL_DIR:

    <20-digit ns time>-<pid>-<8-digit seq>.json   one scrubbed, bounded payload each
    .<name>.tmp                                  a file being written, never read
    <name>.bad                                   a file that did not parse, kept for a human
    .replay.lock                                 locked with flock by the replaying process,
                                                 so two processes never send the same file

Names sort in write order (the time part never goes backwards within a
process), so replaying in name order keeps the order events were spooled in.

Durability (fsync policy): a file is written under a temporary name and
renamed into place, so a reader only ever sees whole files, but nothing is
fsync'ed. A spooled event survives the broker going away and the app
process crashing or being killed, because the data sits in the kernel's
page cache; it may be lost if the machine itself loses power or panics
within the few seconds before the kernel writes it back. An fsync per event
would cost milliseconds each on the publishing thread in the middle of an
outage, for a copy of an event that Sentry receives anyway.

Cap (SPOOL_MAX_BYTES): when a new event would push the spool past the cap,
the new event is dropped and counted; the oldest ones are kept, because the
start of an incident says more about its cause than its hundredth repeat.
"""

import dataclasses
import errno
import fcntl
import itertools
import json
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import Callable, Optional

from config.errors import ErrortriageError

logger = logging.getLogger(__name__)

LOCK_NAME = ".replay.lock"
# A temporary file older than this was left by a writer that died mid-write.
STALE_TMP_SECONDS = 600.0
# While the spool looks full, re-read the real size from disk at most this often
# (other processes may have replayed files in the meantime).
RESCAN_INTERVAL_SECONDS = 1.0

_NAME = re.compile(r"\d{20}-\d+-\d{8}\.json")


class PermanentSendError(ErrortriageError):
    """Raised by a replay callback for a payload that no retry will ever send."""


@dataclasses.dataclass
class ReplayResult:
    """The outcome of one replay pass."""

    sent: int = 0
    quarantined: int = 0
    # Set when the pass stopped because the broker failed. The file stays in the spool.
    error: Optional[BaseException] = None
    # True when another thread or process holds the replay lock.
    busy: bool = False
    # True when the spool had no file left at the end of the pass.
    empty: bool = False


class Spool:
    """A spool directory, safe to share between threads and processes."""

    def __init__(self, directory, max_bytes: int):
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self._seq = itertools.count()
        self._last_ns = 0
        self._lock = threading.Lock()
        self._bytes: Optional[int] = None
        self._scanned_at = 0.0

    def after_fork(self) -> None:
        """Forget locks and cached sizes inherited through fork()."""
        self._lock = threading.Lock()
        self._seq = itertools.count()
        self._bytes = None
        self._scanned_at = 0.0

    # -- writing ---------------------------------------------------------

    def write(self, payload: dict) -> bool:
        """Store one payload, or return False when the cap leaves no room (the new event is dropped).

        Raises OSError when the directory cannot be written.
        """
        data = json.dumps(payload, ensure_ascii=True, separators=(",", ":")).encode("ascii")
        with self._lock:
            if not self._has_room(len(data)):
                return False
            name = self._next_name()
            # Reserve the room now, so two writers cannot both take the last slot.
            self._bytes += len(data)
        try:
            self._write_file(name, data)
        except OSError:
            with self._lock:
                self._bytes -= len(data)
            raise
        return True

    def _has_room(self, size: int) -> bool:
        now = time.monotonic()
        if self._bytes is None:
            self._bytes = self._scan_bytes()
            self._scanned_at = now
        if self._bytes + size <= self.max_bytes:
            return True
        if now - self._scanned_at >= RESCAN_INTERVAL_SECONDS:
            self._bytes = self._scan_bytes()
            self._scanned_at = now
        return self._bytes + size <= self.max_bytes

    def _next_name(self) -> str:
        # Wall-clock time orders files across processes. Within one process the
        # name never goes backwards, even if the clock does.
        now = max(time.time_ns(), self._last_ns + 1)
        self._last_ns = now
        return f"{now:020d}-{os.getpid()}-{next(self._seq) % 10**8:08d}.json"

    def _write_file(self, name: str, data: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.directory / f".{name}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            os.replace(temporary, self.directory / name)
        except OSError:
            try:
                temporary.unlink()
            except OSError:
                pass
            raise

    # -- reading ---------------------------------------------------------

    def pending(self) -> list:
        """Return the spooled files, oldest first."""
        try:
            names = os.listdir(self.directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [self.directory / name for name in sorted(names) if _NAME.fullmatch(name)]

    def __len__(self) -> int:
        return len(self.pending())

    def size_bytes(self) -> int:
        """Return the bytes the spooled files hold right now, read from disk."""
        return self._scan_bytes()

    def _scan_bytes(self) -> int:
        total = 0
        for path in self.pending():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass  # replayed by another process during the scan
        self._remove_stale_tmp()
        return total

    def _remove_stale_tmp(self) -> None:
        try:
            entries = list(os.scandir(self.directory))
        except (FileNotFoundError, NotADirectoryError):
            return
        cutoff = time.time() - STALE_TMP_SECONDS
        for entry in entries:
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                try:
                    if entry.stat().st_mtime < cutoff:
                        os.unlink(entry.path)
                except OSError:
                    pass

    def replay(self, send: Callable[[dict], None], limit: Optional[int] = None) -> ReplayResult:
        """Send spooled payloads oldest first with `send`, deleting each once sent.

        Stops at the first error `send` raises and keeps that file, except for
        PermanentSendError and files that do not parse, which are renamed to
        `.bad` so they cannot block the ones behind them. Only one replayer at a
        time, across threads and processes: the others get `busy`.
        """
        result = ReplayResult()
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = open(self.directory / LOCK_NAME, "a+b")
        except OSError as error:
            result.error = error
            return result
        try:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    result.busy = True
                    return result
                raise
            files = self.pending()
            for index, path in enumerate(files):
                if limit is not None and result.sent + result.quarantined >= limit:
                    return result
                try:
                    payload = self._read(path)
                except FileNotFoundError:
                    continue  # removed by hand during the replay
                if payload is None:
                    result.quarantined += 1
                    continue
                try:
                    send(payload)
                except PermanentSendError as error:
                    logger.error("spooled event can never be sent, kept as .bad: file=%s error=%s", path.name, error)
                    self._quarantine(path)
                    result.quarantined += 1
                    continue
                except Exception as error:  # the broker's failures come as many types
                    result.error = error
                    return result
                self._forget(path)
                result.sent += 1
            result.empty = not self.pending()
            return result
        finally:
            lock.close()  # closing the descriptor releases the flock

    def _read(self, path: Path) -> Optional[dict]:
        try:
            payload = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as error:
            logger.error("spool file does not parse, kept as .bad: file=%s error=%s", path.name, error)
            self._quarantine(path)
            return None
        if not isinstance(payload, dict):
            logger.error("invalid spool file: no payload object, renamed to .bad: file=%s", path.name)
            self._quarantine(path)
            return None
        return payload

    def _quarantine(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            os.replace(path, path.with_name(path.name + ".bad"))
        except OSError:
            return
        with self._lock:
            if self._bytes is not None:
                self._bytes = max(0, self._bytes - size)

    def _forget(self, path: Path) -> None:
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            return
        with self._lock:
            if self._bytes is not None:
                self._bytes = max(0, self._bytes - size)
