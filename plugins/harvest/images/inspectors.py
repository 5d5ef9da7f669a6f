"""A pool of processes that inspect downloaded bytes beside the download threads.

The other end of the pipe protocol is images/imagecheck.py (serve_inspections, write_frame,
read_answer); the download stage hands each download's bytes to ``InspectorPool.inspect``.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import threading
from collections import deque
from pathlib import Path

import harvest
from harvest.images.decoding import BUDGET, BudgetExceeded, DecodeBudget
from harvest.images.imagecheck import (
    MAX_PIXELS,
    ImageRejected,
    Inspected,
    inspection_cost,
    read_answer,
    sniff,
    write_frame,
)


class _InspectorProcess:
    """One inspecting process and the tickets of the requests written to it whose answers are not
    read yet, in the order written (the process answers in that order)."""

    def __init__(self, process: subprocess.Popen):
        self.process = process
        #: guards ``waiting`` and ``dead``
        self.queue_lock = threading.Lock()
        #: (ticket, set when the ticket's answer is next, or the process died)
        self.waiting: deque[tuple[int, threading.Event]] = deque()
        #: serialises writers, so that each request lands whole and in ticket order
        self.writing = threading.Lock()
        #: requests sent or about to be (kept under InspectorPool._pool_lock)
        self.load = 0
        self.dead = False


class InspectorPool:
    """Processes that decode, hash and describe downloaded bytes beside the download threads, which
    would otherwise take turns with them for the interpreter lock. Each process has its own pipes;
    a download thread writes its bytes to the least busy process and reads its own answer when its
    turn comes, so there is no broker thread and no pickling in between. Requests queue in a
    process's pipe: it starts on the next image as soon as it has answered one, instead of idling
    until a download thread wakes up to send more (no limit on queued requests: see bench/README.md,
    "Notes moved from the code"). Started with
    ``python -c``: a child imports only Pillow, NumPy and the inspection code, not whatever the
    parent's main module pulls in. Given a local ``staging`` folder, they also write the bytes they
    accept into it.

    Memory: each request reserves its decode cost (read from the image's header) from this
    process's decode budget before it is sent, and holds it until its answer is read, so the
    processes together never decode more than one budget's worth, however many there are; each
    process decodes one image at a time, and refuses one whose pixels exceed what its header
    declared (the reservation could then be too small)."""

    def __init__(
        self,
        count: int,
        min_width: int,
        min_height: int,
        staging: str | None = None,
        max_pixels: int = MAX_PIXELS,
        budget: DecodeBudget = BUDGET,
    ):
        package_root = str(Path(harvest.__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH")
        self._env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([package_root] + ([path] if path else [])),
            # the hash's matrix products are 8x32 by 32x32: a BLAS thread pool never pays for itself
            **dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1"),
        }
        self._max_pixels = max_pixels
        self._budget = budget
        self._command = [
            sys.executable,
            "-c",
            "from harvest.images.imagecheck import serve_inspections; "
            f"serve_inspections({min_width}, {min_height}, {staging!r}, {max_pixels}, {budget.capacity})",
        ]
        self._tickets = itertools.count()
        #: guards the list of processes and their loads; notified when a dead one's replacement is in
        self._pool_lock = threading.Condition()
        self._inspectors: list[_InspectorProcess] = [_InspectorProcess(self._start()) for _ in range(count)]
        #: replacements of dead processes under way
        self._starting = 0
        self._closed = False

    @property
    def _processes(self) -> list[subprocess.Popen]:
        return [inspector.process for inspector in self._inspectors]

    def _start(self) -> subprocess.Popen:
        process = subprocess.Popen(
            self._command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._env
        )
        for stream in (process.stdin, process.stdout):
            _grow_pipe_buffer(stream)
        return process

    def _enter(self) -> _InspectorProcess:
        """The live process with the fewest requests queued (waiting while a dead one is replaced)."""
        with self._pool_lock:
            while True:
                if self._closed:
                    raise RuntimeError("inspecting processes used after they were stopped")
                if not self._inspectors and not self._starting:
                    raise RuntimeError("no inspecting process could be started")
                inspector = min(self._inspectors, key=lambda each: each.load, default=None)
                if inspector is not None:
                    inspector.load += 1
                    return inspector
                self._pool_lock.wait()  # for the replacement of a dead process

    def _queue(self, inspector: _InspectorProcess) -> tuple[int, threading.Event]:
        """A ticket for the request about to be written (the caller holds ``inspector.writing``, so
        tickets queue in the order of the bytes), and an event set when its answer is the next one
        out (only that thread is woken) or the process died."""
        with inspector.queue_lock:
            ticket, event = next(self._tickets), threading.Event()
            inspector.waiting.append((ticket, event))
            if len(inspector.waiting) == 1 or inspector.dead:
                event.set()
        return ticket, event

    def _leave(self, inspector: _InspectorProcess, ticket: int | None) -> None:
        with self._pool_lock:
            inspector.load -= 1
        with inspector.queue_lock:
            for index, (queued, _event) in enumerate(inspector.waiting):
                if queued == ticket:
                    del inspector.waiting[index]
                    break
            if inspector.waiting:
                inspector.waiting[0][1].set()

    def _replace(self, inspector: _InspectorProcess) -> int | None:
        """Put a fresh process in place of one that died (once, whoever notices first); every
        request still waiting on the dead one is woken to go elsewhere. Returns how it ended."""
        with self._pool_lock:
            with inspector.queue_lock:
                inspector.dead = True
                for _ticket, event in inspector.waiting:
                    event.set()
            current = inspector in self._inspectors
            if current:
                self._inspectors.remove(inspector)
                self._starting += 1
        if current:
            stop_process(inspector.process)
            fresh = None
            try:
                fresh = _InspectorProcess(self._start())
            finally:
                with self._pool_lock:
                    self._starting -= 1
                    if fresh is not None and self._closed:
                        stop_process(fresh.process)
                    elif fresh is not None:
                        self._inspectors.append(fresh)
                    self._pool_lock.notify_all()
        return inspector.process.returncode

    def inspect(self, data: bytes) -> Inspected:
        """Like inspect_image(), with the decode's cost reserved here until the answer is in."""
        try:
            cost = inspection_cost(data, sniff(data), self._max_pixels)
        except ImageRejected:
            cost = 0  # not an image: the inspecting process says so before decoding anything
        try:
            with self._budget.reserve(cost):
                return self._inspect_elsewhere(data)
        except BudgetExceeded as exc:
            raise ImageRejected(str(exc)) from None

    def _inspect_elsewhere(self, data: bytes) -> Inspected:
        """The answer of an inspecting process. Bytes that kill the inspecting process get a second
        process; if that one dies too, the bytes are rejected (a decoder crash must not stop the
        stage). Requests queued behind the one that killed a process are sent again without
        counting an attempt."""
        attempt = 0
        while True:
            inspector, ticket = self._enter(), None
            try:
                with inspector.writing:
                    ticket, answer_next = self._queue(inspector)
                    write_frame(inspector.process.stdin, data)
                answer_next.wait()
                culprit = False  # if woken because the process died on a request before this one
                if not inspector.dead:
                    inspected = read_answer(inspector.process.stdout, data)
                    self._leave(inspector, ticket)
                    return inspected
            except ImageRejected:
                self._leave(inspector, ticket)
                raise
            except (EOFError, OSError, ValueError):
                with inspector.queue_lock:  # it died on this request if it was the one in work (and is
                    # not already known dead: then the request behind it only found the pipe closed)
                    head = not inspector.waiting or inspector.waiting[0][0] == ticket
                    culprit = head and not inspector.dead
            code = self._replace(inspector)  # first: the requests queued behind go elsewhere
            self._leave(inspector, ticket)
            if culprit:
                attempt += 1
                if attempt == 2:
                    raise ImageRejected(
                        f"not a decodable image (the inspecting process died twice on it, exit code {code})"
                    ) from None

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            inspectors, self._inspectors = self._inspectors, []
            self._pool_lock.notify_all()
        for inspector in inspectors:
            stop_process(inspector.process)


#: a pipe this large takes a whole typical image in one write, without waiting for the reader
PIPE_BYTES = 1024 * 1024


def _grow_pipe_buffer(stream) -> None:
    """Grow a pipe's buffer where the platform allows it (Linux); the default 64 KiB would make the
    writer of a larger image wait for the reader part of the way."""
    try:
        import fcntl

        fcntl.fcntl(stream.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass


def stop_process(process: subprocess.Popen) -> None:
    """Close the process's input (it exits at the end of it) and reap it; kill it if it hangs."""
    for stream in (process.stdin, process.stdout):
        try:
            stream.close()
        except OSError:
            pass
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


#: With HARVEST_INSPECT_PROCESSES unset ("auto"), a shard with at least this many candidates is
#: inspected in processes; for fewer, starting them costs more than they save.
PROCESSES_FROM = 256


def inspection_processes(setting: int | None, pending: int) -> int:
    """How many inspecting processes a shard gets: the setting when it names a number, else one per
    core the process may run on, up to 4, when there are two cores or more and work enough."""
    if setting is not None:
        return setting
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, 4) if cores >= 2 and pending >= PROCESSES_FROM else 0
