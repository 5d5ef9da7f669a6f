"""TensorFlow's start-up messages (absl/C++ lines written straight to file descriptor 2) as log
records at INFO, instead of raw stderr, which Airflow's task supervisor logs at level ERROR.

``TF_CPP_MIN_LOG_LEVEL`` silences TensorFlow's own C++ logging, but not the lines absl prints before
it is initialised ("All log messages before absl::InitializeLog() ...", "oneDNN custom operations
are on ..."): a successful task would show red lines. The descriptor, not ``sys.stderr``, is
redirected, because the C++ code never sees Python's stream objects.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger("harvest.model.tensorflow")


def _collect(read_fd: int, lines: list[str]) -> None:
    with os.fdopen(read_fd, "rb") as stream:
        for line in stream:
            text = line.decode("utf-8", errors="replace").rstrip()
            if text:
                lines.append(text)


@contextmanager
def native_stderr_as_log(level: int = logging.INFO) -> Iterator[None]:
    """While inside, whatever is written to descriptor 2 is collected; on leaving, each line becomes a
    log record at ``level``. Logged only once descriptor 2 is back, since a handler writing to stderr
    would otherwise feed its own pipe."""
    sys.stderr.flush()
    saved = os.dup(2)
    read_fd, write_fd = os.pipe()
    lines: list[str] = []
    reader = threading.Thread(target=_collect, args=(read_fd, lines), name="native-stderr", daemon=True)
    reader.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer is gone: the reader sees its end
        os.close(saved)
        reader.join(timeout=5)
        for text in lines:
            log.log(level, "%s", text)
