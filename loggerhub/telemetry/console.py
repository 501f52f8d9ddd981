"""The console tee: the process's stdout and stderr, at the file-descriptor level.

fds 1 and 2 are pointed at pipes; one reader thread writes every byte through to the original
descriptors at once, unchanged and in order per stream, and splits a copy into lines for the
journal. Writes through ``print``, C extensions and child processes that inherit fds 1 and 2 are
all seen, because they all write to those descriptors.

The reader never touches the journal: it hands batches of lines to ``deliver`` through a bounded
queue (see :class:`loggerhub.telemetry.Telemetry`), so a journal writer that is stuck or dead never
stops the terminal output (the batches beyond the bound are counted in ``dropped``). Cleaning
(``\\r`` redraws, escape sequences, the length cap, redaction) happens on the journal side too, in
:func:`loggerhub.codec.console_fields`.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Callable

#: A batch is handed over when it is this old (seconds) or this long (lines).
BATCH_SECONDS = 1.0
BATCH_LINES = 200
#: Batches waiting for the journal at most; beyond, lines are counted as dropped.
MAX_WAITING = 1000
# A line still without its newline is kept to this many bytes (the rest, up to the newline, is
# dropped; the stored line is cut to codec.MAX_CONSOLE_LINE anyway). A progress bar redrawn with
# \r keeps only its latest state, so it never reaches this.
_MAX_PARTIAL = 64 * 1024
_STREAMS = {1: "stdout", 2: "stderr"}
# One tee per process: fds 1 and 2 are process-wide.
_active_lock = threading.Lock()
_active: ConsoleTee | None = None

Batch = tuple[str, float, int, list[str]]  # stream, time of the first line, step, lines


class _Stream:
    def __init__(self, fd: int, name: str) -> None:
        self.fd = fd
        self.name = name
        self.saved = os.dup(fd)  # where the output really goes: the terminal, a file, a pipe
        # Both new descriptors are non-inheritable (Python's default): children get only fd 1/2.
        self.read_end, write_end = os.pipe()
        self.pipe_id = _identity(write_end)
        os.dup2(write_end, fd)
        os.close(write_end)
        self.partial = bytearray()
        self.cut = False
        self.lines: list[str] = []
        self.first = 0.0
        self.step = 0
        self.open = True


class ConsoleTee:
    """Tees fds 1 and 2 while it runs. Make it with :func:`start`."""

    def __init__(self, streams: list[_Stream], step: Callable[[], int], handoff: Callable[[Batch], None]) -> None:
        self._streams = streams
        self._size_set = _keep_terminal_size(streams)
        self._step = step
        self._handoff = handoff
        self._journaling = True
        self._stopping = False
        self._drained = threading.Event()
        self._wake_read, self._wake_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="loggerhub-console", daemon=True)
        self._thread.start()

    # -- the reader thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
            if self._journaling:  # every stream closed before stop(): hand over what is left
                for stream in self._streams:
                    if stream.partial and not stream.cut:
                        self._line(stream, bytes(stream.partial))
                self._hand_over(force=True)
        finally:
            # End of every stream: nothing writes to the pipes any more.
            for stream in self._streams:
                for fd in (stream.read_end, stream.saved):
                    with contextlib.suppress(OSError):
                        os.close(fd)
            for fd in (self._wake_read, self._wake_write):
                with contextlib.suppress(OSError):
                    os.close(fd)
            self._drained.set()

    def _loop(self) -> None:
        by_fd = {stream.read_end: stream for stream in self._streams}
        while any(stream.open for stream in self._streams):
            readable = [stream.read_end for stream in self._streams if stream.open]
            timeout = self._timeout()
            try:
                ready, _, _ = select.select([*readable, self._wake_read], [], [], timeout)
            except InterruptedError:
                continue
            if self._wake_read in ready:
                with contextlib.suppress(OSError):
                    os.read(self._wake_read, 512)
            got_data = False
            for fd in ready:
                stream = by_fd.get(fd)
                if stream is None:
                    continue
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if not data:
                    stream.open = False
                    continue
                got_data = True
                _write_all(stream.saved, data)
                if self._journaling:
                    self._split(stream, data)
            if self._journaling:
                self._hand_over(force=False)
                if self._stopping and not got_data:
                    # Everything written before stop() has been read: hand over the rest, also a
                    # last line without its newline (a bar's final state), and pass through only.
                    for stream in self._streams:
                        if stream.partial:
                            self._line(stream, bytes(stream.partial))
                            stream.partial.clear()
                    self._hand_over(force=True)
                    self._journaling = False
                    self._drained.set()

    def _timeout(self) -> float | None:
        if self._stopping and self._journaling:
            return 0.05  # what is still in the pipes arrives at once; quiet for this long: drained
        pending = [stream.first for stream in self._streams if stream.lines]
        if not pending or not self._journaling:
            return None
        return max(0.0, min(pending) + BATCH_SECONDS - time.time())

    def _split(self, stream: _Stream, data: bytes) -> None:
        start = 0
        while True:
            end = data.find(b"\n", start)
            if end < 0:
                break
            piece = data[start:end]
            if stream.cut:
                stream.cut = False
                line = bytes(stream.partial)
            else:
                line = bytes(stream.partial) + piece
            stream.partial.clear()
            self._line(stream, line)
            start = end + 1
        rest = data[start:]
        if rest and not stream.cut:
            stream.partial += rest
            if len(stream.partial) > _MAX_PARTIAL:
                redraw = stream.partial.rfind(b"\r")
                if redraw > 0:
                    del stream.partial[:redraw]
                if len(stream.partial) > _MAX_PARTIAL:
                    del stream.partial[_MAX_PARTIAL:]
                    stream.cut = True

    def _line(self, stream: _Stream, line: bytes) -> None:
        if not stream.lines:
            stream.first = time.time()
            stream.step = self._step()
        stream.lines.append(line.decode("utf-8", "replace"))
        if len(stream.lines) >= BATCH_LINES:
            self._hand_over_stream(stream)

    def _hand_over(self, force: bool) -> None:
        now = time.time()
        for stream in self._streams:
            if stream.lines and (force or now - stream.first >= BATCH_SECONDS):
                self._hand_over_stream(stream)

    def _hand_over_stream(self, stream: _Stream) -> None:
        lines, stream.lines = stream.lines, []
        with contextlib.suppress(Exception):  # the terminal copy matters more than the journal's
            self._handoff((stream.name, stream.first, stream.step, lines))

    # -- the owner's side ------------------------------------------------------------------------

    def stop(self, timeout: float = 2.0) -> None:
        """Flush Python's buffers, give fds 1 and 2 back, and wait (up to ``timeout``) until
        everything written before is read and handed over. The reader then passes through
        whatever child processes still write to the pipes, until they close them."""
        global _active
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                if stream is not None:
                    stream.flush()
        for stream in self._streams:
            # Only if fd 1 (2) is still our pipe: someone (pytest's capture, a daemoniser) may
            # have pointed it elsewhere since, and that must stay as they left it.
            with contextlib.suppress(OSError):
                if _identity(stream.fd) == stream.pipe_id:
                    os.dup2(stream.saved, stream.fd)
        self._stopping = True
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")
        self._drained.wait(timeout)
        for name in self._size_set:
            os.environ.pop(name, None)
        with _active_lock:
            if _active is self:
                _active = None


def start(step: Callable[[], int], handoff: Callable[[Batch], None]) -> ConsoleTee | None:
    """Tee fds 1 and 2 (those that are open), or None: another run in this process tees them
    already, or neither is open."""
    global _active
    with _active_lock:
        if _active is not None:
            return None
        streams = []
        for fd, name in _STREAMS.items():
            try:
                os.fstat(fd)
            except OSError:
                continue  # closed (a daemon): nothing to tee
            try:
                streams.append(_Stream(fd, name))
            except OSError:
                continue  # out of descriptors: this stream stays as it is
        if not streams:
            return None
        _active = ConsoleTee(streams, step, handoff)
        return _active


def _keep_terminal_size(streams: list[_Stream]) -> list[str]:
    """While fds 1 and 2 are pipes, programs that ask them for the terminal's size (tqdm's bar
    width, shutil.get_terminal_size) find none, and fall back to ``COLUMNS`` and ``LINES``: set to
    the terminal's size when they are not set. Returns the variables set, to unset at the end."""
    if "COLUMNS" in os.environ or "LINES" in os.environ:
        return []
    for stream in streams:
        try:
            size = os.get_terminal_size(stream.saved)
        except OSError:
            continue  # not a terminal
        os.environ["COLUMNS"], os.environ["LINES"] = str(size.columns), str(size.lines)
        return ["COLUMNS", "LINES"]
    return []


def _identity(fd: int) -> tuple[int, int]:
    info = os.fstat(fd)
    return info.st_dev, info.st_ino


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            written = os.write(fd, view)
        except InterruptedError:
            continue
        except OSError:
            return  # the terminal went away (EPIPE, EBADF): output is lost as it would be anyway
        view = view[written:]

