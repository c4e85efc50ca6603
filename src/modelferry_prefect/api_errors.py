"""Failures of Prefect's client as `OrchestratorError`s that say what to do.

Every message names the API URL without any user, password or query part. None holds the
API key or the auth string: Prefect's client keeps them in its request headers, and no
message here reads headers, a request or the text of an HTTP error.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Final

import httpx
import pydantic

from modelferry.errors import ModelferryError, OrchestratorError

__all__ = [
    "LOCAL_API_URL",
    "PENDING_HINT",
    "is_missing_route",
    "no_api_url",
    "not_api_root",
    "not_http",
    "redacted_url",
    "refused",
    "translated_errors",
    "unreachable",
]

#: The URL a local `prefect server start` serves its API on.
LOCAL_API_URL: Final = "http://127.0.0.1:4200/api"
PENDING_HINT: Final = "run `modelferry pending` to list the flow runs waiting for approval"
_START_SERVER_HINT: Final = (
    "start one with `prefect server start`, then "
    f"`prefect config set PREFECT_API_URL={LOCAL_API_URL}` (or export PREFECT_API_URL)"
)
_CREDENTIALS_HINT: Final = (
    "check PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING (a server started "
    "with PREFECT_SERVER_API_AUTH_STRING), in the environment or the active Prefect profile"
)
_TLS_HINT: Final = (
    "check PREFECT_API_SSL_CERT_FILE (the server's CA bundle), or set "
    "PREFECT_API_TLS_INSECURE_SKIP_VERIFY=true for a test server only"
)


def redacted_url(url: str) -> str:
    """The API root `url` without credentials, query or trailing slash, for a message."""
    try:
        parsed = httpx.URL(url.strip())
    except httpx.InvalidURL:
        return "<an invalid URL>"
    bare = parsed.copy_with(username=None, password=None, query=None, fragment=None)
    return str(bare).rstrip("/")


def no_api_url() -> OrchestratorError:
    """No API URL in the environment, the active profile or the command line."""
    return OrchestratorError(
        "PREFECT_API_URL is not set (in the environment or the active Prefect profile); "
        f"approvals need a running Prefect server: {_START_SERVER_HINT} (or pass --api-url)"
    )


def not_http(url: str) -> OrchestratorError:
    """An API URL that is not http(s)."""
    return OrchestratorError(
        f"the Prefect API URL {redacted_url(url)!r} is not an http(s) URL; "
        f"expected something like {LOCAL_API_URL}"
    )


def unreachable(url: str, exc: httpx.TransportError) -> OrchestratorError:
    """The connection failed (refused, DNS, TLS) or timed out, after the client's retries."""
    where = f"the Prefect API at {redacted_url(url)}"
    if isinstance(exc, httpx.TimeoutException):
        return OrchestratorError(
            f"{where} did not answer in time; check the server is running and not overloaded"
        )
    # The text of a transport error is the socket's or TLS library's, never a header.
    if "CERTIFICATE" in str(exc) or "SSL" in str(exc):
        return OrchestratorError(f"cannot reach {where}: the TLS handshake failed; {_TLS_HINT}")
    return OrchestratorError(
        f"cannot reach {where} ({type(exc).__name__}); check the server is running: "
        f"{_START_SERVER_HINT}"
    )


def refused(url: str, status_code: int) -> OrchestratorError:
    """401 or 403: the credentials are missing or wrong."""
    return OrchestratorError(
        f"the Prefect API at {redacted_url(url)} refused the request (HTTP {status_code}); "
        f"{_CREDENTIALS_HINT}"
    )


def not_api_root(url: str, path: str) -> OrchestratorError:
    """A route every Prefect API has is missing, or the answer is not Prefect's JSON."""
    return OrchestratorError(
        f"{redacted_url(url)} did not answer {path} as the Prefect API does; is it the "
        f"Prefect 3 API root (ending in /api, e.g. {LOCAL_API_URL})?"
    )


def is_missing_route(response: httpx.Response) -> bool:
    """Whether a 404 means "no such route" (a URL without /api), not "no such object"."""
    return response.status_code == httpx.codes.NOT_FOUND and _detail(response) == "Not Found"


@contextmanager
def translated_errors(url: str) -> Iterator[None]:
    """Turn the client's transport, HTTP and parsing failures into `OrchestratorError`."""
    try:
        yield
    except ModelferryError:
        raise
    except httpx.TransportError as exc:
        raise unreachable(url, exc) from None
    except httpx.HTTPStatusError as exc:
        response = exc.response
        code = response.status_code
        if code in (httpx.codes.UNAUTHORIZED, httpx.codes.FORBIDDEN):
            raise refused(url, code) from None
        if is_missing_route(response):
            raise not_api_root(url, response.request.url.path) from None
        raise OrchestratorError(
            f"the Prefect API at {redacted_url(url)} answered {response.request.method} "
            f"{response.request.url.path} with HTTP {code}: {_detail(response)}"
        ) from None
    except (json.JSONDecodeError, pydantic.ValidationError):
        # An answer that is not a Prefect object: a web page, or another service's JSON.
        raise not_api_root(url, "its requests") from None


def _detail(response: httpx.Response) -> str:
    """The server's own explanation in an error answer, shortened."""
    try:
        body = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(body, Mapping):
        return str(body.get("detail") or body.get("exception_message") or body)[:500]
    return str(body)[:500]
