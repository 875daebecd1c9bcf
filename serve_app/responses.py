"""HTTP plumbing of the ingress: the error shape, strict numbers, bounded JSON bodies, resource rendering."""

from __future__ import annotations

import json
import logging
import math
import secrets
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from prreview.errors import BadRequest, InvalidJSON, PayloadTooLarge, PRReviewError
from prreview.store import Job, Row

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "payload_too_large"}

# Longest digit string parse_int reads: 19 digits hold any int64, and refusing longer ones keeps
# `int()` away from megabyte-long numbers (and from its 4,300-digit ValueError).
MAX_INT_DIGITS = 19
_ASCII_DIGITS = frozenset("0123456789")


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def _is_ascii_int(raw: str) -> bool:
    # str.isdigit() is True for "²" and "٣", which int() then refuses or reads as another number.
    return 0 < len(raw) <= MAX_INT_DIGITS and _ASCII_DIGITS.issuperset(raw)


def parse_int(raw: str | None, *, name: str, default: int, minimum: int = 0,
              maximum: int = 2**63 - 1) -> int:
    """A query value or header as a whole number from `minimum` to `maximum`; `default` when absent.

    Only plain ASCII digits are accepted: no sign, no space, no Unicode digit, at most
    MAX_INT_DIGITS of them. Anything else, empty included, is a 400 `bad_request` naming `name`."""
    if raw is None:
        return default
    if not _is_ascii_int(raw) or not minimum <= (value := int(raw)) <= maximum:
        raise BadRequest(f"{name} must be a whole number from {minimum} to {maximum}.")
    return value


async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PRReviewError)
    headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))} if exc.retry_after_s else {}
    if exc.http_status == 401 and exc.code == "unauthorized":
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(exc.http_status, exc.code, exc.message, headers or None)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))


async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    """Any other exception: a JSON 500 that names only an error id; the log line has the id,
    the request and the traceback. Starlette hands `exception_handlers={Exception: ...}` to its
    ServerErrorMiddleware, which sends this answer and then re-raises for the server to see."""
    error_id = secrets.token_hex(4)
    log.error("internal error %s on %s %s", error_id, request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal_error",
                          f"The service failed while answering (error id {error_id}); the operator's log "
                          "has the details under that id.")


class UnsupportedMediaType(PRReviewError):
    code = "unsupported_media_type"
    http_status = 415


def require_json(request: Request) -> None:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise UnsupportedMediaType("The request body must be JSON (Content-Type: application/json).")


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refusing one over `max_bytes` before reading it whole."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared or not _ASCII_DIGITS.issuperset(declared):
            raise BadRequest("Content-Length must be a whole number of bytes.")
        if len(declared) > MAX_INT_DIGITS or int(declared) > max_bytes:
            raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    return bytes(body)


async def read_model(request: Request, model: type[M], max_bytes: int) -> M:
    """The request body as `model`: JSON only (415 otherwise: a form or `text/plain` post from a
    web page is refused before it is read), over `max_bytes` refused before it is read whole."""
    require_json(request)
    data = parse_json(await read_body(request, max_bytes))
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"Invalid field '{where}': {first['msg']}.") from exc


def parse_json(body: bytes) -> dict[str, Any]:
    """A JSON object, or InvalidJSON (400)."""
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    return data


def resource(job: Job | Row) -> dict[str, Any]:
    """The review resource as JSON data, from a stored job or its row."""
    return (job if isinstance(job, Job) else Job.from_row(job)).resource().model_dump(mode="json")


async def on_database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database cannot be reached (a failover, a restart): a 503 the client may retry."""
    log.warning("database unavailable on %s %s: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(503, "unavailable", "The review database is unreachable for the moment; retry shortly.",
                          {"Retry-After": str(DATABASE_RETRY_AFTER_S)})


DATABASE_RETRY_AFTER_S = 5
