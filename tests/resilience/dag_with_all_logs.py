"""Run the harvest DAG through ``scripts/run_harvest.py`` (``dag.test()``) with every log record of
every logger captured, whatever level the logging configuration gives it.

Usage: ``python dag_with_all_logs.py CAPTURE_FILE -- run_harvest arguments...``

Logging configuration decides what reaches handlers, and Airflow re-configures logging as it starts
and again around tasks, so a handler added here could be removed or filtered. Instead every logger
is made to report itself enabled for every level, and each record is written to CAPTURE_FILE (message
with its arguments, extra fields and traceback) before the real logging machinery decides, as
configured, whether to emit it. Stdout and stderr (where ``dag.test()`` prints task logs) are the
caller's to read.
"""

from __future__ import annotations

import logging
import runpy
import sys
import threading
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def capture_every_record(path: Path) -> None:
    sink = path.open("a", encoding="utf-8", errors="backslashreplace")
    lock = threading.Lock()
    enabled_as_configured = logging.Logger.isEnabledFor
    emit_as_configured = logging.Logger._log

    def _log(self, level, msg, args, exc_info=None, extra=None, stack_info=False, stacklevel=1):
        try:
            text = str(msg) % args if args else str(msg)
        except Exception:  # noqa: BLE001 - a malformed call is still captured, raw
            text = f"{msg!r} % {args!r}"
        if exc_info:
            info = sys.exc_info() if exc_info is True else exc_info
            if isinstance(info, BaseException):
                info = (type(info), info, info.__traceback__)
            if info and info[0] is not None:
                text += "\n" + "".join(traceback.format_exception(*info))
        if extra:
            text += f" extra={extra!r}"
        with lock:
            sink.write(f"{logging.getLevelName(level)} {self.name}: {text}\n")
            sink.flush()
        if enabled_as_configured(self, level):
            emit_as_configured(self, level, msg, args, exc_info, extra, stack_info, stacklevel + 1)

    logging.Logger.isEnabledFor = lambda self, level: True
    logging.Logger._log = _log


def main(argv: list[str]) -> None:
    capture_every_record(Path(argv[0]))
    sys.argv = [str(REPO / "scripts" / "run_harvest.py"), *argv[2:]]
    runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
