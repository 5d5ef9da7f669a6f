"""The total deadline of one hop: a timer thread shuts the hop's socket when the deadline passes,
so a server dripping its headers or body a byte at a time cannot hold a worker."""

from __future__ import annotations

import heapq
import itertools
import socket
import threading
import time
from collections.abc import Callable

from urllib3.connection import HTTPConnection


class HopDeadline:
    """The total deadline of one hop: when it passes, the hop's socket is shut down, whether the
    server is dripping its headers or its body (a read timeout alone never fires on a server that
    sends a byte now and then). The socket itself is kept: once a response says ``Connection:
    close`` the connection object lets go of it, and closing the response from this thread would
    wait for the very read it is meant to end."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fired = False
        self.sock: socket.socket | None = None

    def attach(self, sock: socket.socket | None) -> None:
        """The socket that is about to wait for the response; shut at once if time is up."""
        with self.lock:
            self.sock = sock
            fired = self.fired
        if fired:
            shut_socket(sock)

    def abort(self) -> None:
        with self.lock:
            self.fired = True
            sock = self.sock
        shut_socket(sock)


#: ``hop_deadline``: the deadline of the hop this thread is making (sessions and connections are
#: per thread)
this_thread = threading.local()


def getresponse_within_deadline(conn: HTTPConnection, getresponse: Callable, *args, **kwargs):
    hop_deadline: HopDeadline | None = getattr(this_thread, "hop_deadline", None)
    if hop_deadline is not None:
        hop_deadline.attach(getattr(conn, "sock", None))
    return getresponse(*args, **kwargs)


class DeadlineTimer:
    """Calls each hop's abort at its total deadline unless cancelled first. One thread per client
    serves every hop: a timer thread per request would cost a thread start each, in the hot path of
    a download."""

    #: seconds without anything to watch after which the thread ends (the next hop starts another)
    IDLE = 10.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._deadlines: list[tuple[float, int]] = []  # a heap; cancelled tokens are skipped lazily
        self._live: dict[int, Callable[[], None]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None

    def call_at(self, deadline: float, action: Callable[[], None]) -> int:
        """Run ``action`` at ``deadline`` (time.monotonic()); returns the token that cancels it."""
        with self._cond:
            token = next(self._tokens)
            self._live[token] = action
            heapq.heappush(self._deadlines, (deadline, token))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="http-watchdog", daemon=True)
                self._thread.start()
            elif self._deadlines[0][1] == token:
                self._cond.notify()
            return token

    def cancel(self, token: int) -> None:
        with self._cond:
            self._live.pop(token, None)
            if len(self._deadlines) > 2 * len(self._live) + 64:  # drop what was cancelled
                self._deadlines = [entry for entry in self._deadlines if entry[1] in self._live]
                heapq.heapify(self._deadlines)

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    while self._deadlines and self._deadlines[0][1] not in self._live:
                        heapq.heappop(self._deadlines)
                    if not self._deadlines:
                        if not self._cond.wait(self.IDLE) and not self._live:
                            self._thread = None
                            return
                        continue
                    wait = self._deadlines[0][0] - time.monotonic()
                    if wait <= 0:
                        action = self._live.pop(heapq.heappop(self._deadlines)[1])
                        break
                    self._cond.wait(wait)
            try:
                action()
            except Exception:  # noqa: BLE001 - the hop sees its socket shut either way
                pass


def shut_socket(sock: socket.socket | None) -> None:
    """Shut the socket down: closing alone does not wake a thread blocked in recv()."""
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
