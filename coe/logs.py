"""Logging set-up shared by every command: one format, with the id of the request being served
(``REQUEST_ID``, set by the API's middleware; ``-`` outside a request) and its graph (``GRAPH``).
Records are handed to a queue and written by a thread of their own, so no request waits on a write
to stderr.

Two formats: ``text`` (one readable line) and ``json`` (one object per line: ``time``, ``level``,
``logger``, ``message``, ``request_id``, ``graph``, and ``exc`` with a traceback; uvicorn's access
lines add ``client``, ``method``, ``path`` and ``status``). Prompts and answers are logged only
when ``log_content`` is on (``coe.api`` checks it); nothing else logs them.
"""

from __future__ import annotations

import atexit
import contextvars
import copy
import datetime
import json
import logging
import logging.handlers
import queue
import sys
from typing import Any, Literal

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("coe_request_id", default="-")
GRAPH: contextvars.ContextVar[str] = contextvars.ContextVar("coe_graph", default="-")
FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
LogFormat = Literal["text", "json"]


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` and ``graph`` to every record, in the context that logged it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        record.graph = GRAPH.get()
        args = record.args  # gone once queued: keep what the JSON format shows of an access line
        if record.name == "uvicorn.access" and isinstance(args, tuple) and len(args) == 5:
            record.access = {"client": args[0], "method": args[1], "path": args[2], "status": args[4]}
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "graph": getattr(record, "graph", "-"),
        }
        entry.update(getattr(record, "access", {}))
        if record.exc_text:
            entry["exc"] = record.exc_text
        return json.dumps(entry, ensure_ascii=False, default=str)


class _Queued(logging.handlers.QueueHandler):
    """The root handler; owns the listener thread that writes what it queues."""

    listener: logging.handlers.QueueListener

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        """The record as the writer thread needs it: message merged with its arguments, traceback
        as text (``exc_text``) rather than appended to the message."""
        record = copy.copy(record)
        record.msg = record.message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.args = None
        record.exc_info = None
        return record


def setup(verbose: bool = False, log_format: LogFormat = "text") -> None:
    """Route every logger (uvicorn's access log too) through one queue to stderr in ``log_format``.
    Calling it again replaces the previous set-up (``coe serve`` does, once it knows its format)."""
    root = logging.getLogger()
    for old in root.handlers:
        if isinstance(old, _Queued):
            atexit.unregister(old.listener.stop)
            old.listener.stop()
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(JsonFormatter() if log_format == "json" else logging.Formatter(FORMAT))
    handler = _Queued(records)
    handler.addFilter(RequestIdFilter())
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    handler.listener = logging.handlers.QueueListener(records, writer)
    handler.listener.start()
    atexit.register(handler.listener.stop)  # flush what is queued before the process ends
    for noisy in ("LiteLLM", "litellm", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
