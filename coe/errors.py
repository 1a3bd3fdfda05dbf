"""The exception tree of coe.

::

    CoeError
    ├── UserError                 the caller's input is wrong (HTTP 4xx, CLI exit 2)
    │   ├── ConfigError           a YAML/JSON file does not validate; message is FILE:LINE:COL: field: msg
    │   ├── GraphNotFound         the requested graph (``model``) does not exist (404)
    │   ├── InvalidRequest        a request body is malformed or asks for what coe cannot do (400)
    │   └── UnknownQuestion       a replay expert was asked a question it never saw
    ├── Overloaded                an expert's queue is full: try again later (429, Retry-After)
    └── UpstreamError             something coe depends on failed (HTTP 502/503/504, CLI exit 1)
        ├── RequestTimeout        the whole request ran past ``request_timeout_s`` (504)
        ├── ExpertError           an expert call failed after its retries (502)
        │   ├── ExpertTimeout     an expert call timed out (504)
        │   ├── ExpertUnavailable the expert's server is down and being relaunched (503, fast)
        │   └── ExpertRejected    the expert refused the request (upstream 4xx → 400); never retried
        └── LaunchError           an expert server or Redis did not start
"""

from __future__ import annotations


class CoeError(Exception):
    """Base of every error coe raises on purpose."""


class UserError(CoeError):
    """The input is wrong; retrying the same input will fail the same way."""


class ConfigError(UserError):
    """A configuration or graph file is invalid. ``str(err)`` holds one line per problem."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class GraphNotFound(UserError):
    """No graph of that name is served."""


class InvalidRequest(UserError):
    """A request body does not follow the protocol, or asks for what coe cannot do.

    ``param`` names the offending field; ``code`` is OpenAI's error code for it."""

    def __init__(self, message: str, param: str | None = None, code: str = "invalid_request") -> None:
        self.param = param
        self.code = code
        super().__init__(message)


class UnknownQuestion(UserError):
    """A replay expert holds no recorded answer for the question it was asked."""


class Overloaded(CoeError):
    """An expert has as many calls waiting as its queue admits; ``retry_after_s`` estimates when
    a slot frees up."""

    def __init__(self, expert: str, waiting: int, retry_after_s: float) -> None:
        self.expert = expert
        self.retry_after_s = retry_after_s
        super().__init__(
            f"expert {expert!r} is busy ({waiting} calls waiting); retry after {retry_after_s:.0f}s"
        )


class UpstreamError(CoeError):
    """A dependency (expert server, Redis) failed."""


class RequestTimeout(UpstreamError):
    """The request as a whole ran past its deadline."""


class ExpertError(UpstreamError):
    """An expert call failed after its retries."""

    def __init__(self, expert: str, message: str) -> None:
        self.expert = expert
        super().__init__(f"expert {expert!r}: {message}")


class ExpertTimeout(ExpertError):
    """An expert call took longer than its timeout."""


class ExpertUnavailable(ExpertError):
    """The expert's server is down (coe is relaunching it): calls fail at once."""


class ExpertRejected(ExpertError):
    """The expert's server refused the request (HTTP 4xx): the same request fails the same way.

    ``status`` is the upstream's HTTP status; ``code`` an OpenAI error code where one is known
    (``context_length_exceeded`` when the prompt does not fit the expert's context).
    """

    def __init__(self, expert: str, message: str, status: int, code: str | None = None) -> None:
        self.status = status
        self.code = code
        super().__init__(expert, message)


class LaunchError(UpstreamError):
    """A server coe starts (expert or Redis) did not come up."""
