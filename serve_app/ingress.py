"""ReviewIngress: the HTTP edge. Records work durably and answers at once; never waits for an agent.

Nothing here calls another deployment per request: a new job wakes the dispatcher through the
database (NOTIFY), and the progress streams are fed by one LISTEN connection per replica that
fans each job's events out to its open streams. Every `/v1` route but GitHub's webhook needs an
API key (prreview/access.py); a key sees and cancels its own reviews, an admin key all of them.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle
from sse_starlette.sse import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from actors.resources import Database, github_client
from prreview import metrics, notify
from prreview.access import Keyring, Principal, Right
from prreview.config import Settings, load_settings
from prreview.db import TRANSIENT_ERRORS
from prreview.errors import BadRequest, NotFound, PRReviewError, Unavailable
from prreview.models import BatchRequest, ReviewOptions, Status, SubmitRequest
from prreview.store import Job
from serve_app.responses import (
    on_app_error,
    on_database_unavailable,
    on_http_error,
    on_unexpected_error,
    parse_int,
    parse_json,
    read_body,
    read_model,
    require_json,
    resource,
)
from serve_app.submissions import Submissions, batch_item
from serve_app.web import web_routes
from serve_app.webhooks import Ignored, InvalidSignature, interpret, signature_valid

log = logging.getLogger(__name__)

# A stream re-reads its job this often even without a notification (one lost in a failover).
EVENT_FALLBACK_POLL_S = 15.0
# The ingress answers fast or not at all: a request waits at most this long for a connection.
POOL_TIMEOUT_S = 5.0
TERMINAL_EVENTS = frozenset(s.value for s in Status if s.terminal)
MAX_EVENT_ID = 2**63 - 1
KEYS_CHANNEL = "pr_review_keys"  # a revoked key's id (migration 0004)

Endpoint = Callable[[Request], Awaitable[Response]]
Handler = Callable[[Request, Principal], Awaitable[Response]]


def _agents_running() -> int:
    """Running ReviewAgent replicas of this application, from Serve's controller (blocking)."""
    app = serve.status().applications.get(serve.get_replica_context().app_name)
    deployment = app.deployments.get("ReviewAgent") if app else None
    if deployment is None:
        return 0
    return sum(n for state, n in deployment.replica_states.items() if str(getattr(state, "value", state)) == "RUNNING")


class IngressCore:
    """The routes, independent of Serve so they can be served by any ASGI server in tests."""

    def __init__(self, settings: Settings, *, in_serve: bool = True) -> None:
        self.settings = settings
        self._in_serve = in_serve
        self._db: Database | None = None
        self._submissions: Submissions | None = None
        self._keyring: Keyring | None = None
        self._opening = asyncio.Lock()
        self._streams = notify.Signal()  # job id -> the open event streams of that job

    async def db(self) -> Database:
        async with self._opening:
            if self._db is None:
                db = await Database.open(self.settings, max_size=20, timeout_s=POOL_TIMEOUT_S)
                keyring = Keyring(self.settings, db.store.sql)
                db.listener.subscribe(notify.EVENTS, self._streams.notify)
                db.listener.subscribe(KEYS_CHANNEL, keyring.forget)
                db.listener.on_reconnect(self._streams.notify_all)
                db.listener.on_reconnect(keyring.forget_all)
                db.listener.start()
                if self._in_serve:
                    metrics.watch_event_loop_lag()
                self._submissions = Submissions(self.settings, db.store, db.lifecycle, github_client(self.settings))
                self._db, self._keyring = db, keyring
        return self._db

    async def submissions(self) -> Submissions:
        await self.db()
        assert self._submissions is not None
        return self._submissions

    def _guard(self, handler: Handler, right: Right) -> Endpoint:
        """The route, for callers whose API key has `right`: 401 without a valid key, 403 without
        the right."""
        async def endpoint(request: Request) -> Response:
            await self.db()
            assert self._keyring is not None
            principal = await self._keyring.authenticate(request.headers.get("authorization"))
            principal.require(right)
            return await handler(request, principal)

        return endpoint

    # --- reviews --------------------------------------------------------------------------------
    async def submit_review(self, request: Request, principal: Principal) -> Response:
        body = await read_model(request, SubmitRequest, self.settings.max_request_bytes)
        self._may_publish(principal, body.options)
        submitted = await (await self.submissions()).submit(body.pr_url, body.options, principal)
        return JSONResponse(resource(submitted.job), status_code=202 if submitted.created else 200,
                            headers={"Location": f"/v1/reviews/{submitted.job.id}"})

    async def get_review(self, request: Request, principal: Principal) -> Response:
        return JSONResponse(resource(await self._job(request.path_params["id"], principal)))

    async def cancel_review(self, request: Request, principal: Principal) -> Response:
        db = await self.db()
        job = await self._job(request.path_params["id"], principal)
        cancelled = await db.lifecycle.cancel(job.id) if not job.status.terminal else None
        if cancelled is None:  # finished, or a concurrent cancel got there first
            job = await self._job(job.id, principal)
            if job.status.terminal:
                return JSONResponse({"error": {"code": "already_finished",
                                               "message": f"The review already ended as {job.status.value}."}},
                                    status_code=409)
        return JSONResponse(resource(cancelled or job), status_code=202)

    async def list_reviews(self, request: Request, principal: Principal) -> Response:
        status = request.query_params.get("status") or None
        if status is not None and status not in {s.value for s in Status}:
            raise BadRequest(f"Unknown status {status!r}.")
        limit = parse_int(request.query_params.get("limit"), name="limit", default=50, minimum=1, maximum=500)
        jobs = await (await self.db()).store.list_jobs(status=status, limit=limit,
                                                       submitted_by=_only_own(principal))
        return JSONResponse({"items": [resource(j) for j in jobs]})

    async def review_events(self, request: Request, principal: Principal) -> Response:
        job = await self._job(request.path_params["id"], principal)
        after = parse_int(request.headers.get("last-event-id"), name="Last-Event-ID", default=0,
                          maximum=MAX_EVENT_ID)
        return EventSourceResponse(self._event_stream(job.id, after), ping=10)

    async def _event_stream(self, job_id: str, after: int) -> AsyncIterator[ServerSentEvent]:
        """The job's events from `after` on, each read once it is notified; ends after the
        terminal one (a status change and its event are one statement, so it always comes)."""
        store = (await self.db()).store
        async with self._streams.watch(job_id) as woken:
            while True:
                events = await store.events_after(job_id, after)
                for event in events:
                    after = event["id"]
                    payload = {"kind": event["kind"], **event["data"], "at": event["created_at"].isoformat()}
                    yield ServerSentEvent(data=json.dumps(payload), event=event["kind"], id=str(event["id"]))
                    if event["kind"] in TERMINAL_EVENTS:
                        return
                if events:
                    continue
                if not await notify.wait(woken, EVENT_FALLBACK_POLL_S) and await store.get_job(job_id) is None:
                    return  # removed by retention while someone was still watching

    # --- batches --------------------------------------------------------------------------------
    async def submit_batch(self, request: Request, principal: Principal) -> Response:
        body = await read_model(request, BatchRequest, self.settings.max_request_bytes)
        self._may_publish(principal, body.options)
        batch_id, entries = await (await self.submissions()).submit_batch(body.pr_urls, body.options, principal)
        return JSONResponse({"id": batch_id, "reviews": [batch_item(e) for e in entries]}, status_code=202,
                            headers={"Location": f"/v1/batches/{batch_id}"})

    async def get_batch(self, request: Request, principal: Principal) -> Response:
        store = (await self.db()).store
        batch = await store.get_batch(request.path_params["id"])
        if batch is None or not principal.owns(batch["submitted_by"]):
            raise NotFound(f"No batch has id {request.path_params['id']!r}.")
        counts: dict[str, int] = {}
        reviews: list[dict[str, Any]] = []
        for item in await store.batch_items(str(batch["id"])):
            if item["item_job_id"] is None:
                counts["rejected"] = counts.get("rejected", 0) + 1
                reviews.append({"pr_url": item["item_url"], "error": item["item_error"]})
                continue
            job = resource(item)
            counts[job["status"]] = counts.get(job["status"], 0) + 1
            reviews.append(job)
        return JSONResponse({"id": str(batch["id"]), "created_at": batch["created_at"].isoformat(),
                             "counts": counts, "reviews": reviews})

    # --- GitHub ---------------------------------------------------------------------------------
    async def github_webhook(self, request: Request) -> Response:
        """GitHub's deliveries (README, "GitHub App and webhooks"): signed with GITHUB_WEBHOOK_SECRET,
        remembered by delivery id, and turned into published reviews when they ask for one."""
        secret = self.settings.github_webhook_secret
        if secret is None:
            raise NotFound("No webhook is configured here (GITHUB_WEBHOOK_SECRET is not set).")
        body = await read_body(request, self.settings.max_webhook_bytes)
        if not signature_valid(secret.get_secret_value(), body, request.headers.get("x-hub-signature-256")):
            raise InvalidSignature("The delivery's X-Hub-Signature-256 does not match its body.")
        require_json(request)
        event, delivery = request.headers.get("x-github-event"), request.headers.get("x-github-delivery")
        if not event or not delivery or len(delivery) > 100:
            raise BadRequest("A delivery needs the X-GitHub-Event and X-GitHub-Delivery headers.")
        decision = interpret(event, parse_json(body), web_host=self.settings.github_web_host)
        submissions = await self.submissions()
        async with (await self.db()).lifecycle.transaction() as (lifecycle, store):
            if not await lifecycle.record_delivery(delivery, event):
                return JSONResponse({"ignored": "redelivery"})
            if isinstance(decision, Ignored):
                return JSONResponse({"ignored": decision.reason})
            # Raises QueueFull, rolling the delivery back: GitHub shows it failed and it can be redelivered.
            job = await submissions.from_github(decision, lifecycle, store)
        return JSONResponse({"reviews": [{"id": job.id, "status": job.status.value}]}, status_code=202)

    # --- health ---------------------------------------------------------------------------------
    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        try:
            db = await asyncio.wait_for(self.db(), POOL_TIMEOUT_S)
            stats = await asyncio.wait_for(db.store.queue_stats(), POOL_TIMEOUT_S)
        except Exception as exc:
            raise Unavailable(f"Not ready: {type(exc).__name__}: {exc}", retry_after_s=5) from exc
        agents = await self._agent_pool()
        if agents == 0:
            raise Unavailable("Not ready: no ReviewAgent replica is running.", retry_after_s=5)
        return JSONResponse({"status": "ready", "queued": stats.queued, "running": stats.running,
                             "agents": agents})

    async def _agent_pool(self) -> int | None:
        """Running agent replicas, from Serve's controller; None when it cannot say (outside
        Serve, or the head node restarting: the workers go on serving, so that is not unready)."""
        if not self._in_serve:
            return None
        # Serve health-checks every agent replica; asking the pool itself would queue this probe
        # behind the reviews it is running, and fail exactly when the pool is busy.
        try:
            return await asyncio.wait_for(asyncio.to_thread(_agents_running), 10)
        except Exception as exc:
            log.info("no agent count from Serve's controller: %s: %s", type(exc).__name__, exc)
            return None

    async def cluster(self, request: Request, principal: Principal) -> Response:
        """`GET /v1/cluster`, what `pr-review status` prints: the queue, replicas per deployment (from
        Serve's controller; empty when served outside Serve) and the latest failures."""
        store = (await self.db()).store
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
                      "failed": stats.failed, "cancelled": stats.cancelled, "finished_within_s": 86400},
            "applications": await asyncio.to_thread(applications) if self._in_serve else {},
            "recent_failures": [{"id": str(f["id"]), "pr_url": f["pr_url"], "error": f["error"],
                                 "finished_at": f["finished_at"].isoformat() if f["finished_at"] else None}
                                for f in failures],
        })

    # --- helpers --------------------------------------------------------------------------------
    async def _job(self, job_id: str, principal: Principal) -> Job:
        """The job, if it exists and the caller may see it (another key's review is not found)."""
        job = await (await self.db()).store.get_job(job_id)
        if job is None or not principal.owns(job.submitted_by):
            raise NotFound(f"No review has id {job_id!r}.")
        return job

    @staticmethod
    def _may_publish(principal: Principal, options: ReviewOptions) -> None:
        if options.post:
            principal.require(Right.PUBLISH)

    def routes(self) -> list[Route]:
        guard = self._guard
        return [
            Route("/v1/reviews", guard(self.submit_review, Right.SUBMIT), methods=["POST"]),
            Route("/v1/reviews", guard(self.list_reviews, Right.READ), methods=["GET"]),
            Route("/v1/reviews/{id}", guard(self.get_review, Right.READ), methods=["GET"]),
            Route("/v1/reviews/{id}", guard(self.cancel_review, Right.SUBMIT), methods=["DELETE"]),
            Route("/v1/reviews/{id}/events", guard(self.review_events, Right.READ), methods=["GET"]),
            Route("/v1/batches", guard(self.submit_batch, Right.SUBMIT), methods=["POST"]),
            Route("/v1/batches/{id}", guard(self.get_batch, Right.READ), methods=["GET"]),
            Route("/v1/cluster", guard(self.cluster, Right.ADMIN), methods=["GET"]),
            Route("/v1/github/webhook", self.github_webhook, methods=["POST"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            *web_routes(self.settings.allowed_hosts.split(",")),
        ]

    def asgi_app(self) -> Starlette:
        handlers: dict[Any, Any] = {PRReviewError: on_app_error, HTTPException: on_http_error,
                                    Exception: on_unexpected_error}
        handlers.update(dict.fromkeys(TRANSIENT_ERRORS, on_database_unavailable))
        return Starlette(routes=self.routes(), exception_handlers=handlers)


def _only_own(principal: Principal) -> str | None:
    """The submitter whose reviews a listing shows: the caller's own, or everyone's for admin."""
    return None if principal.can(Right.ADMIN) else principal.submitter


@serve.deployment(name="ReviewIngress")
@serve.ingress()
class ReviewIngress:
    def __init__(self, dispatcher: DeploymentHandle) -> None:
        # Never called per request (a new job wakes the dispatcher through the database): held
        # only because binding it here is what makes it part of this application.
        self._dispatcher = dispatcher
        self._core = IngressCore(load_settings())

    def __serve_build_asgi_app__(self) -> Starlette:
        return self._core.asgi_app()
