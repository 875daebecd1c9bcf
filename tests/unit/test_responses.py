"""The ingress's HTTP plumbing: strict numbers from hostile input, and every failure as JSON."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from prreview.errors import BadRequest, PRReviewError, QueueFull
from prreview.models import SubmitRequest
from serve_app.responses import (
    MAX_INT_DIGITS,
    on_app_error,
    on_http_error,
    on_unexpected_error,
    parse_int,
    read_model,
)

# --- parse_int ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [("1", 1), ("50", 50), ("500", 500), ("007", 7), (None, 20)])
def test_plain_ascii_digits_are_read(raw: str | None, expected: int) -> None:
    assert parse_int(raw, name="limit", default=20, minimum=1, maximum=500) == expected


@pytest.mark.parametrize("raw", [
    "",  # empty
    " ", " 5", "5 ", "\t5", "5\n",  # whitespace, which int() would forgive
    "+1", "-1", "1_000", "1.0", "1e3", "0x10", "five",  # signs, separators, other notations
    "²", "¹²", "٣", "５", "𝟓", "߁",  # Unicode digits: isdigit() is True for all, int() takes some
    "9" * 5000,  # int() refuses over 4,300 digits with a ValueError: a 500 before this helper
    "1" * (MAX_INT_DIGITS + 1),
    "0", "501",  # out of range
])
def test_anything_else_is_a_bad_request_naming_the_value(raw: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse_int(raw, name="limit", default=20, minimum=1, maximum=500)
    assert caught.value.http_status == 400 and caught.value.code == "bad_request"
    assert caught.value.message == "limit must be a whole number from 1 to 500."


def test_the_default_range_takes_any_event_id() -> None:
    assert parse_int("0", name="Last-Event-ID", default=0) == 0
    assert parse_int(str(2**63 - 1), name="Last-Event-ID", default=0) == 2**63 - 1  # a bigint id
    for raw in (str(2**63), "9" * 5000):
        with pytest.raises(BadRequest, match="^Last-Event-ID must be a whole number from 0 to "):
            parse_int(raw, name="Last-Event-ID", default=0)


# --- the handlers, as the ingress installs them --------------------------------------------------
SECRET = "postgresql://admin:hunter2@db.internal:5432/prod"


async def boom(request: Request) -> Response:
    raise RuntimeError(f"could not connect to {SECRET}")


async def limited(request: Request) -> Response:
    limit = parse_int(request.query_params.get("limit"), name="limit", default=50, minimum=1, maximum=500)
    after = parse_int(request.headers.get("last-event-id"), name="Last-Event-ID", default=0)
    return JSONResponse({"limit": limit, "after": after})


async def full(request: Request) -> Response:
    raise QueueFull("The review queue is full.", retry_after_s=7)


async def body(request: Request) -> Response:
    parsed = await read_model(request, SubmitRequest, max_bytes=1024)
    return JSONResponse({"pr_url": parsed.pr_url})


@pytest.fixture(scope="module")
def client() -> TestClient:
    app = Starlette(routes=[Route("/boom", boom), Route("/items", limited), Route("/full", full),
                            Route("/body", body, methods=["POST"])],
                    exception_handlers={PRReviewError: on_app_error, HTTPException: on_http_error,
                                        Exception: on_unexpected_error})
    # The server sees the exception too (Starlette re-raises it after answering): not the test's.
    return TestClient(app, raise_server_exceptions=False)


def test_an_unexpected_exception_answers_json_with_an_error_id_and_logs_the_cause(
        client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="serve_app.responses"):
        response = client.get("/boom")
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == "internal_error"
    match = re.fullmatch(r"The service failed while answering \(error id ([0-9a-f]{8})\); .+\.", error["message"])
    assert match, error["message"]
    assert "hunter2" not in response.text and "RuntimeError" not in response.text and "Traceback" not in response.text

    [record] = [r for r in caplog.records if r.name == "serve_app.responses"]
    assert match.group(1) in record.getMessage() and "GET /boom" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert SECRET in caplog.text and "Traceback" in caplog.text  # the cause, for the operator only

    again = client.get("/boom").json()["error"]["message"]
    assert again != error["message"], "each failure gets its own id"


@pytest.mark.parametrize(("query", "headers"), [
    ("?limit=²", {}), ("?limit=" + "9" * 5000, {}), ("?limit=-1", {}), ("?limit=", {}), ("?limit=%201", {}),
    ("", {"Last-Event-ID": "9" * 5000}), ("", {"Last-Event-ID": "²".encode("latin-1")}),
    ("", {"Last-Event-ID": "-3"}),
])
def test_hostile_numbers_are_400s_never_500s(client: TestClient, query: str, headers: dict[str, Any]) -> None:
    response = client.get("/items" + query, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "bad_request"


def test_good_numbers_and_the_other_handlers_still_answer(client: TestClient) -> None:
    assert client.get("/items?limit=20", headers={"Last-Event-ID": "42"}).json() == {"limit": 20, "after": 42}
    assert client.get("/items").json() == {"limit": 50, "after": 0}
    full = client.get("/full")
    assert (full.status_code, full.headers["retry-after"], full.json()["error"]["code"]) == (503, "7", "queue_full")
    missing = client.get("/nowhere")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(("length", "status"), [
    ("²".encode("latin-1"), 400), ("-5", 400), ("9" * 5000, 413), ("4096", 413)])
def test_a_hostile_content_length_is_refused_before_the_body_is_read(client: TestClient, length: str | bytes,
                                                                       status: int) -> None:
    response = client.post("/body", content=b'{"pr_url": "x"}', headers={"Content-Length": length,
                                                                         "Content-Type": "application/json"})
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] in ("bad_request", "payload_too_large")
