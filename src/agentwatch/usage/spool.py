"""The usage recorder's spill file: rows that wait on disk while the database is away.

Rows are appended in batches, each fsynced before it counts; they are read back from an offset
and the file is removed once every row in it has been written. Reading back never deletes
anything, so a crash between a database write and the file's removal replays rows already in
the ledger: the recorder drops those on replay (same request id and timestamp). The methods
block, and the recorder calls them from a worker thread; a lock keeps them one at a time.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

log = logging.getLogger(__name__)
COUNT_CHUNK_BYTES = 1 << 20


class SpillFile:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.rejected_path = path.with_name(path.name + ".rejected")
        self._offset = 0  # bytes of the file already written to the database
        self._rows = 0  # complete lines after the offset
        self._lock = threading.Lock()

    @property
    def rows(self) -> int:
        """Rows in the file not yet written to the database."""
        return self._rows

    def open(self) -> int:
        """Adopt the file a previous process left (counting its rows) and return that count.
        A line cut short by a crash mid-append is moved to the rejected file, so the next
        append starts on a line of its own."""
        with self._lock:
            self._offset = 0
            self._rows = 0
            if not self.path.exists():
                return 0
            rows, complete = _count_lines(self.path)
            if complete < self.path.stat().st_size:
                with self.path.open("r+b") as handle:
                    handle.seek(complete)
                    self._reject([handle.read()])
                    handle.truncate(complete)
                    os.fsync(handle.fileno())
            self._rows = rows
            if rows == 0:
                self.path.unlink()
            return rows

    def append(self, lines: list[bytes]) -> None:
        """Add newline-terminated rows at the end, durably: on disk when this returns."""
        if not lines:
            return
        with self._lock:
            created = not self.path.exists()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("ab") as handle:
                handle.write(b"".join(lines))
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                _fsync_directory(self.path.parent)
            self._rows += len(lines)

    def read(self, limit: int) -> tuple[list[bytes], int]:
        """Up to `limit` unwritten rows from the oldest, and the offset just past them; nothing
        is consumed until `consumed` is called with that offset."""
        with self._lock:
            lines: list[bytes] = []
            if self._rows == 0:
                return lines, self._offset
            try:
                with self.path.open("rb") as handle:
                    handle.seek(self._offset)
                    while len(lines) < limit:
                        line = handle.readline()
                        if not line.endswith(b"\n"):
                            break
                        lines.append(line)
                    end = handle.tell() if lines else self._offset
            except FileNotFoundError:
                end = self._offset
            if not lines:
                # Only someone deleting or truncating the file behind our back gets here.
                log.error("usage spill file %s lost %d rows it held", self.path, self._rows)
                self._rows = 0
                self._offset = 0
            return lines, end

    def consumed(self, end: int, count: int) -> None:
        """The rows read up to `end` are in the database; the file goes once all of them are."""
        with self._lock:
            self._offset = end
            self._rows = max(0, self._rows - count)
            if self._rows == 0:
                self.path.unlink(missing_ok=True)
                self._offset = 0

    def reject(self, lines: list[bytes]) -> None:
        """Keep rows that cannot be decoded aside, for a person to look at."""
        with self._lock:
            self._reject(lines)

    def _reject(self, lines: list[bytes]) -> None:
        with self.rejected_path.open("ab") as handle:
            for line in lines:
                handle.write(line.rstrip(b"\n") + b"\n")
        log.error("%d unreadable usage spill rows moved to %s", len(lines), self.rejected_path)


def _count_lines(path: Path) -> tuple[int, int]:
    """The number of complete lines, and the offset just past the last one, read in chunks so
    a large file never sits in memory whole."""
    rows, position, complete = 0, 0, 0
    with path.open("rb") as handle:
        while chunk := handle.read(COUNT_CHUNK_BYTES):
            rows += chunk.count(b"\n")
            last = chunk.rfind(b"\n")
            if last >= 0:
                complete = position + last + 1
            position += len(chunk)
    return rows, complete


def _fsync_directory(directory: Path) -> None:
    """A new file's name is durable only once its directory is synced."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
