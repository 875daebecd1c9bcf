"""HTTP plumbing of the ingress: the error shape, bounded JSON bodies, resource rendering."""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from prreview.errors import BadRequest, InvalidJSON, PayloadTooLarge, PRReviewError
from prreview.store import Row, to_resource

M = TypeVar("M", bound=BaseModel)

_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 413: "payload_too_large"}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


async def on_app_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PRReviewError)
    headers = {"Retry-After": str(int(exc.retry_after_s))} if exc.retry_after_s else None
    return error_response(exc.http_status, exc.code, exc.message, headers)


async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, _HTTP_CODES.get(exc.status_code, "http_error"), str(exc.detail))


async def read_model(request: Request, model: type[M], max_bytes: int) -> M:
    """The request body as `model`, refusing bodies over `max_bytes` before reading them whole."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise PayloadTooLarge(f"The request body is larger than {max_bytes} bytes.")
    try:
        data = json.loads(body or b"null")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise BadRequest(f"Invalid field '{where}': {first['msg']}.") from exc


def resource(row: Row) -> dict[str, Any]:
    return to_resource(row).model_dump(mode="json")
