"""Logging set-up for the tower's and the agent's processes: text or JSON lines.

JSON lines carry ``time``, ``level``, ``logger``, ``message`` and, when known,
``request_id``: the id of the agent request being handled (set around a request in
``request_id``, or passed as ``extra={"request_id": ...}``). Standard library only.

Lines that remote input can trigger (a malformed request, a refused one) go through a
:class:`Throttle`: a flood of junk costs a few lines and a summary, not a line each.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# The agent request (wire Request.id) being handled in this thread or task, if any.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc)
                            .isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id.get()
        if rid:
            out["request_id"] = rid
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def formatter(fmt: str = "text") -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def setup(level: str, fmt: str = "text") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(formatter(fmt))
    logging.basicConfig(level=level.upper(), handlers=[handler])


def gunicorn_config(level: str, fmt: str = "json") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for gunicorn and the app in its workers: the same
    lines as the tower's own (text with time, level and logger, or JSON) on stderr,
    gunicorn's own messages included."""
    formatter_config = ({"()": f"{__name__}.JsonFormatter"} if fmt == "json"
                        else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"main": formatter_config},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "main",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {"gunicorn.error": {"level": level.upper(), "handlers": [],
                                       "propagate": True},
                    # off (gunicorn has no access log unless asked)
                    "gunicorn.access": {"level": "WARNING", "handlers": [],
                                        "propagate": True}},
    }


class Throttle:
    """At most ``burst`` lines per ``key`` and ``interval`` seconds; what is held back is
    counted and said in one summary line when the next interval begins (or on ``flush``).

        drops = Throttle(log, burst=10, interval=10.0)
        drops.log(logging.WARNING, ("malformed", zone), "dropped a malformed request "
                  "on zone %s: %s", zone, error, summary=f"malformed requests on zone {zone}")
    """

    def __init__(self, logger: logging.Logger, burst: int = 10, interval: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()
        # key -> [window start, lines logged in it, lines held back, level, summary]
        self._windows: dict[Hashable, list] = {}

    def log(self, level: int, key: Hashable, msg: str, *args: object, summary: str) -> bool:
        """Log (True) or count (False) one line of kind ``key``."""
        now = self.clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window[0] >= self.interval:
                if window is not None and window[2]:
                    self._summarise(window)
                window = self._windows[key] = [now, 0, 0, level, summary]
            if window[1] < self.burst:
                window[1] += 1
                logged = True
            else:
                window[2] += 1
                logged = False
        if logged:
            self.logger.log(level, msg, *args)
        return logged

    def tick(self) -> None:
        """Say what was held back in windows that are over (call it now and then: a flood
        that stops gets its summary without waiting for the next line of its kind)."""
        now = self.clock()
        with self._lock:
            over = [key for key, w in self._windows.items() if now - w[0] >= self.interval]
            windows = [self._windows.pop(key) for key in over]
        for window in windows:
            if window[2]:
                self._summarise(window)

    def flush(self) -> None:
        """Say what is held back now (e.g. at exit)."""
        with self._lock:
            windows = [w for w in self._windows.values() if w[2]]
            self._windows.clear()
        for window in windows:
            self._summarise(window)

    def _summarise(self, window: list) -> None:
        started, _, held, level, summary = window
        self.logger.log(level, "... and %d more %s in the last %.0f s", held, summary,
                        self.clock() - started)
