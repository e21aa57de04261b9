"""gunicorn's threaded worker, answering its own protocol-level errors in JSON."""
from __future__ import annotations

import json
import logging

from gunicorn.http import errors as http_errors
from gunicorn.workers.gthread import ThreadWorker

log = logging.getLogger(__name__)

# gunicorn's exception -> (status, reason, message for people); others are a bad request.
_STATUS = (
    (http_errors.LimitRequestLine, 414, "URI Too Long", "the request line is too long"),
    (http_errors.LimitRequestHeaders, 431, "Request Header Fields Too Large",
     "the request headers are too large"),
    (http_errors.UnsupportedTransferCoding, 501, "Not Implemented",
     "unsupported transfer coding"),
)
_CLIENT_ERRORS = tuple(getattr(http_errors, name) for name in dir(http_errors)
                       if isinstance(getattr(http_errors, name), type)
                       and issubclass(getattr(http_errors, name), Exception))


def error_response(exc: BaseException) -> tuple[int, str, str]:
    for cls, status, reason, message in _STATUS:
        if isinstance(exc, cls):
            return status, reason, message
    if isinstance(exc, _CLIENT_ERRORS):
        return 400, "Bad Request", f"malformed HTTP request: {exc}"[:200]
    return 500, "Internal Server Error", "internal error"


class JsonErrorWorker(ThreadWorker):
    def handle_error(self, req, client, addr, exc) -> None:  # noqa: D102
        status, reason, message = error_response(exc)
        if status == 500:
            log.error("error handling a request", exc_info=exc)
        else:
            log.info("refused a malformed request: %s", message)
        body = json.dumps({"error": message}).encode()
        head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
        try:
            client.sendall(head.encode("latin-1") + body)
        except OSError:
            pass
