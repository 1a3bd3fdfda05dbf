"""The exception tree of coe.

::

    CoeError
    ├── UserError                 the caller's input is wrong (HTTP 4xx, CLI exit 2)
    │   ├── ConfigError           a YAML/JSON file does not validate; message is FILE:LINE:COL: field: msg
    │   ├── GraphNotFound         the requested graph (``model``) does not exist
    │   ├── InvalidRequest        a request body is malformed
    │   └── UnknownQuestion       a replay expert was asked a question it never saw
    └── UpstreamError             something coe depends on failed (HTTP 502/504, CLI exit 1)
        ├── ExpertError           an expert call failed after its retries
        │   └── ExpertTimeout     an expert call timed out
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
    """A request body does not follow the protocol."""

    def __init__(self, message: str, param: str | None = None) -> None:
        self.param = param
        super().__init__(message)


class UnknownQuestion(UserError):
    """A replay expert holds no recorded answer for the question it was asked."""


class UpstreamError(CoeError):
    """A dependency (expert server, Redis) failed."""


class ExpertError(UpstreamError):
    """An expert call failed after its retries."""

    def __init__(self, expert: str, message: str) -> None:
        self.expert = expert
        super().__init__(f"expert {expert!r}: {message}")


class ExpertTimeout(ExpertError):
    """An expert call took longer than its timeout."""


class LaunchError(UpstreamError):
    """A server coe starts (expert or Redis) did not come up."""
