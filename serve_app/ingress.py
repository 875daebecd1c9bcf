"""ReviewIngress: the HTTP edge. Records work durably and answers at once; never waits for an agent."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.resources import github_client, open_store
from prreview import metrics
from prreview.config import Settings, load_settings
from prreview.errors import BadRequest, NotFound, PRReviewError, Unavailable
from prreview.models import TERMINAL_STATUSES, BatchRequest, SubmitRequest
from prreview.store import JobStore
from serve_app.responses import on_app_error, on_http_error, read_model, resource
from serve_app.submissions import Submissions, error_item
from serve_app.web import web_routes

log = logging.getLogger(__name__)

EVENT_POLL_S = 0.3
TERMINAL_EVENTS = frozenset({"succeeded", "failed", "cancelled"})


def _agents_running() -> int:
    """Running ReviewAgent replicas of this application, from Serve's controller (blocking)."""
    app = serve.status().applications.get(serve.get_replica_context().app_name)
    deployment = app.deployments.get("ReviewAgent") if app else None
    if deployment is None:
        return 0
    return sum(n for state, n in deployment.replica_states.items() if str(getattr(state, "value", state)) == "RUNNING")


class IngressCore:
    """The routes, independent of Serve so they can be served by any ASGI server in tests."""

    def __init__(self, settings: Settings, dispatcher: DeploymentHandle | None = None,
                 agent: DeploymentHandle | None = None) -> None:
        self.settings = settings
        self._dispatcher, self._agent = dispatcher, agent
        self._store: JobStore | None = None
        self._submissions: Submissions | None = None
        self._opening = asyncio.Lock()
        self._background: set[asyncio.Future[Any]] = set()

    async def store(self) -> JobStore:
        async with self._opening:
            if self._store is None:
                self._store = await open_store(self.settings, max_size=20)
                self._submissions = Submissions(self.settings, self._store, github_client(self.settings))
        return self._store

    async def submissions(self) -> Submissions:
        await self.store()
        assert self._submissions is not None
        return self._submissions

    def _wake_dispatcher(self) -> None:
        # One wake in flight is enough: the dispatcher claims every queued job when it wakes.
        if self._dispatcher is None or self._background:
            return
        future = asyncio.ensure_future(self._dispatcher.wake.remote())
        self._background.add(future)
        future.add_done_callback(self._background.discard)

    # --- reviews --------------------------------------------------------------------------------
    async def submit_review(self, request: Request) -> Response:
        body = await read_model(request, SubmitRequest, self.settings.max_request_bytes)
        submitted = await (await self.submissions()).submit(body.pr_url, body.options)
        if submitted.created:
            metrics.review_submitted()
            self._wake_dispatcher()
        job = resource(submitted.row)
        return JSONResponse(job, status_code=202 if submitted.created else 200,
                            headers={"Location": f"/v1/reviews/{job['id']}"})

    async def get_review(self, request: Request) -> Response:
        return JSONResponse(resource(await self._job(request.path_params["id"])))

    async def cancel_review(self, request: Request) -> Response:
        store = await self.store()
        job = await self._job(request.path_params["id"])
        if job["status"] in TERMINAL_STATUSES:
            return JSONResponse({"error": {"code": "already_finished",
                                           "message": f"The review already ended as {job['status']}."}},
                                status_code=409)
        row = await store.request_cancel(str(job["id"]))
        assert row is not None
        if row["status"] == "cancelled":
            await store.record_event(str(row["id"]), "cancelled", {"by": "user"})
            metrics.review_finished("cancelled", row["created_at"])
        return JSONResponse(resource(row), status_code=202)

    async def list_reviews(self, request: Request) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in {"queued", "running", "succeeded", "failed", "cancelled"}:
            raise BadRequest(f"Unknown status {status!r}.")
        raw_limit = request.query_params.get("limit", "50")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 500:
            raise BadRequest("limit must be an integer from 1 to 500.")
        rows = await (await self.store()).list_jobs(status=status, limit=int(raw_limit))
        return JSONResponse({"items": [resource(r) for r in rows]})

    async def review_events(self, request: Request) -> Response:
        job = await self._job(request.path_params["id"])
        last = request.headers.get("last-event-id", "0")
        after = int(last) if last.isdigit() else 0
        return EventSourceResponse(self._event_stream(str(job["id"]), after), ping=10)

    async def _event_stream(self, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
        store = await self.store()
        while True:
            events = await store.events_after(job_id, after)
            for event in events:
                after = event["id"]
                payload = {"kind": event["kind"], **event["data"], "at": event["created_at"].isoformat()}
                yield ServerSentEvent(data=json.dumps(payload), event=event["kind"], id=str(event["id"]))
                if event["kind"] in TERMINAL_EVENTS:
                    return
            if not events:
                row = await store.get_job(job_id)
                if row is None or row["status"] in TERMINAL_STATUSES and not await store.events_after(job_id, after):
                    return
                await asyncio.sleep(EVENT_POLL_S)

    # --- batches --------------------------------------------------------------------------------
    async def submit_batch(self, request: Request) -> Response:
        body = await read_model(request, BatchRequest, self.settings.max_request_bytes)
        store, submissions = await self.store(), await self.submissions()
        batch_id = await store.insert_batch(body.options.model_dump(mode="json"))
        items: list[dict[str, Any]] = []
        for position, url in enumerate(body.pr_urls):
            try:
                submitted = await submissions.submit(url, body.options)
            except PRReviewError as exc:
                await store.insert_batch_item(batch_id, position, url, job_id=None, error=error_item(exc))
                items.append({"pr_url": url, "error": error_item(exc)})
                continue
            job_id = str(submitted.row["id"])
            if submitted.created:
                metrics.review_submitted()
            await store.insert_batch_item(batch_id, position, url, job_id=job_id, error=None)
            items.append({"pr_url": url, "id": job_id, "status": submitted.row["status"]})
        self._wake_dispatcher()
        return JSONResponse({"id": batch_id, "reviews": items}, status_code=202,
                            headers={"Location": f"/v1/batches/{batch_id}"})

    async def get_batch(self, request: Request) -> Response:
        store = await self.store()
        batch = await store.get_batch(request.path_params["id"])
        if batch is None:
            raise NotFound(f"No batch has id {request.path_params['id']!r}.")
        counts: dict[str, int] = {}
        reviews: list[dict[str, Any]] = []
        for item in await store.batch_items(str(batch["id"])):
            if item["job_id"] is None:
                counts["rejected"] = counts.get("rejected", 0) + 1
                reviews.append({"pr_url": item["pr_url"], "error": item["item_error"]})
                continue
            job = resource(item)
            counts[job["status"]] = counts.get(job["status"], 0) + 1
            reviews.append(job)
        return JSONResponse({"id": str(batch["id"]), "created_at": batch["created_at"].isoformat(),
                             "counts": counts, "reviews": reviews})

    # --- health ---------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            store = await asyncio.wait_for(self.store(), 5)
            stats = await asyncio.wait_for(store.queue_stats(), 5)
            # Serve health-checks every agent replica; asking the pool itself would queue this
            # probe behind the reviews it is running, and fail exactly when the pool is busy.
            if self._agent is not None and not await asyncio.wait_for(asyncio.to_thread(_agents_running), 10):
                raise RuntimeError("no ReviewAgent replica is running")
        except Exception as exc:
            raise Unavailable(f"Not ready: {type(exc).__name__}: {exc}") from exc
        return JSONResponse({"status": "ready", "queued": stats.queued, "running": stats.running})

    async def cluster(self, request: Request) -> Response:
        """`GET /v1/cluster`, what `pr-review status` prints: the queue, replicas per deployment (from
        Serve's controller; empty when served outside Serve) and the latest failures."""
        store = await self.store()
        stats, failures = await store.queue_stats(), await store.recent_failures(limit=5)

        def applications() -> dict[str, Any]:
            try:
                status = serve.status()  # a blocking controller call: run in a thread
            except Exception as exc:
                log.info("no Serve status: %s: %s", type(exc).__name__, exc)
                return {}

            def text(value: Any) -> str:  # Serve hands back enums or plain strings, depending on the field
                return str(getattr(value, "value", value))

            return {name: {"status": text(app.status), "deployments": {
                dep: {"status": text(d.status), "replicas": {text(s): n for s, n in d.replica_states.items()}}
                for dep, d in app.deployments.items()}} for name, app in status.applications.items()}

        return JSONResponse({
            "queue": {"queued": stats.queued, "running": stats.running, "succeeded": stats.succeeded,
                      "failed": stats.failed, "cancelled": stats.cancelled},
            "applications": await asyncio.to_thread(applications),
            "recent_failures": [{"id": str(f["id"]), "pr_url": f["pr_url"], "error": f["error"],
                                 "finished_at": f["finished_at"].isoformat() if f["finished_at"] else None}
                                for f in failures],
        })

    async def _job(self, job_id: str) -> dict[str, Any]:
        row = await (await self.store()).get_job(job_id)
        if row is None:
            raise NotFound(f"No review has id {job_id!r}.")
        return row

    def routes(self) -> list[Route]:
        return [
            Route("/v1/reviews", self.submit_review, methods=["POST"]),
            Route("/v1/reviews", self.list_reviews, methods=["GET"]),
            Route("/v1/reviews/{id}", self.get_review, methods=["GET"]),
            Route("/v1/reviews/{id}", self.cancel_review, methods=["DELETE"]),
            Route("/v1/reviews/{id}/events", self.review_events, methods=["GET"]),
            Route("/v1/batches", self.submit_batch, methods=["POST"]),
            Route("/v1/batches/{id}", self.get_batch, methods=["GET"]),
            Route("/v1/cluster", self.cluster, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            *web_routes(),
        ]

    def asgi_app(self) -> Starlette:
        return Starlette(routes=self.routes(),
                         exception_handlers={PRReviewError: on_app_error, HTTPException: on_http_error})


@serve.deployment(name="ReviewIngress", max_ongoing_requests=200)
@serve.ingress()
class ReviewIngress:
    def __init__(self, dispatcher: DeploymentHandle, agent: DeploymentHandle) -> None:
        self._core = IngressCore(load_settings(), dispatcher, agent)

    def __serve_build_asgi_app__(self) -> Starlette:
        return self._core.asgi_app()
