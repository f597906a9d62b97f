"""HTTP endpoints: parse, call Store (or queue), answer. Errors map to statuses in ERROR_HANDLERS."""

from __future__ import annotations

import hmac
import logging
from typing import Any, TypeVar

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import metrics, models, ops, queue, sessions
from .config import Settings
from .errors import AppError, Forbidden, NotFound, PayloadTooLarge, StoreUnavailable, Unauthorized, UnsupportedMediaType
from .feed import encode_cursor
from .metrics import metrics_endpoint
from .models import encode
from .openapi import openapi_endpoint
from .store import Store

JSON = "application/json"
log = logging.getLogger("godmode_store")
T = TypeVar("T")


RETRY_AFTER_S = "1"


def json_response(data: Any, status: int = 200) -> Response:
    return Response(encode(data), status, media_type=JSON)


def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _body_too_large(limit: int) -> PayloadTooLarge:
    metrics.TOO_LARGE.labels("body").inc()
    return PayloadTooLarge("request body is larger than the limit", field="body", limit=limit)


async def _body(request: Request, type_: type[T]) -> T:
    # Browsers may post JSON as text/plain to skip a preflight; only form encodings are refused.
    headers = request.headers
    if headers.get("content-type", "").startswith(_FORM_TYPES):
        raise UnsupportedMediaType("body must be JSON (Content-Type: application/json)")
    limit = _settings(request).max_body_bytes
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _body_too_large(limit)
    if declared:
        return models.load_json(await request.body(), type_)
    chunks, size = [], 0  # chunked upload: count as it arrives
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _body_too_large(limit)
        chunks.append(chunk)
    return models.load_json(b"".join(chunks), type_)


# -- messages -----------------------------------------------------------------------------------


async def post_comment(request: Request) -> Response:
    settings = _settings(request)
    plan = models.plan_append(await _body(request, models.Comment), settings)
    result = await _store(request).append_message(plan)
    metrics.record_append(plan.kind, result)
    if result.status in ("ok", "duplicate"):
        return json_response(models.Posted(plan.id, result.timestamp,
                                           "success" if result.status == "ok" else "duplicate", result.key))
    if result.status == "backlog":
        raise PayloadTooLarge(
            "conversation is full of pending/processing messages; complete them before posting more",
            key=result.key, limit=result.limit, size=result.current + result.size, backlog=result.current,
        )
    if result.size > result.limit:
        raise PayloadTooLarge("message is larger than the per-key limit", key=result.key, limit=result.limit, size=result.size)
    raise PayloadTooLarge(
        "God Mode session is full", key=result.key, limit=result.limit, size=result.current + result.size
    )


async def get_comments(request: Request) -> Response:
    settings = _settings(request)
    query = models.poll_query(request.query_params, settings.partitions)
    read = await _store(request).read_feed(query.positions, query.limit, query.type_mark)
    page = read.page
    return json_response(models.PollPage(
        [msgspec.Raw(m) for m in page.messages], page.next_after, page.has_more, read.global_score,
        encode_cursor(page.positions), page.reset or query.reset, settings.client_version or None))


async def patch_comment(request: Request) -> Response:
    message_id = models.ident(request.path_params["id"], "id")
    body = await _body(request, models.ScoreBody)
    message, global_score = await queue.update_score(_store(request), message_id, int(body.eqScore))
    return json_response(models.Scored(True, msgspec.Raw(message), global_score))


async def get_conversation(request: Request) -> Response:
    human_user, human_color, ai_user, ai_color, after, limit = models.conversation_query(request.query_params)
    rows = await _store(request).read_pair(human_user, human_color, ai_user, ai_color, after, limit)
    return json_response([msgspec.Raw(row) for row in rows])


# -- God Mode sessions --------------------------------------------------------------------------


async def _one_session(request: Request, session_id: str) -> Response:
    session_id = models.ident(session_id, "sessionId")
    human_user, human_color, ai_user, ai_color = models.pair_query(request.query_params, ai_required=False)
    row = await _store(request).read_session(human_user, human_color, ai_user, ai_color, session_id)
    if row is None:
        raise NotFound(f"no God Mode session {session_id} for {human_user}:{human_color}", sessionId=session_id)
    messages = [msgspec.Raw(m) for m in row.messages or []]
    return json_response(models.OneSession(models.session_summary(human_user, human_color, row), messages,
                                           len(messages), row.truncated))


async def get_godmode_conversation(request: Request) -> Response:
    return await _one_session(request, request.query_params.get("sessionId", ""))


async def get_godmode_session(request: Request) -> Response:
    return await _one_session(request, request.path_params["session_id"])


async def list_godmode_sessions(request: Request) -> Response:
    human_user, human_color, ai_user, ai_color, limit, after = models.sessions_query(request.query_params)
    page = await _store(request).list_sessions(human_user, human_color, ai_user, ai_color, limit, after)
    return json_response(models.SessionList([models.session_summary(human_user, human_color, row) for row in page.rows],
                                            page.total, sessions.encode_cursor(*page.next) if page.next else None))


async def post_godmode_session(request: Request) -> Response:
    meta = models.session_meta(await _body(request, models.SessionMetaBody), _settings(request))
    await _store(request).save_session_meta(meta.key, meta.data)
    return json_response(models.SessionSaved(True, meta.key, meta.message_count))


# -- queue --------------------------------------------------------------------------------------


async def claim_next(request: Request) -> Response:
    body = await _body(request, models.ClaimNextBody)
    message, token, total, remaining = await queue.claim_next(_store(request), encode(body.workerId))
    if message is None:
        return json_response(models.ClaimNextAnswer(success=False, message=None, reason="no_pending_messages", totalPending=total,
                                                    remainingPending=remaining))
    return json_response(models.ClaimNextAnswer(success=True, message=message, claimToken=token, totalPending=total,
                                                remainingPending=remaining))


async def claim(request: Request) -> Response:
    body = await _body(request, models.ClaimBody)
    message, token = await queue.claim(_store(request), body.messageId, encode(body.workerId))
    return json_response(models.Claimed(True, message, token))


async def complete(request: Request) -> Response:
    body = await _body(request, models.CompleteBody)
    await queue.complete(_store(request), body.messageId, body.claimToken or "")
    return json_response(models.Done(True))


async def get_pending(request: Request) -> Response:
    limit = models.pending_limit(request.query_params)
    messages, waiting, processing, truncated = await queue.pending(_store(request), limit)
    return json_response(models.PendingAnswer(messages, [], truncated,
                                              models.QueueCounts(waiting, processing, len(messages))))


# -- operations ---------------------------------------------------------------------------------


async def admin_stats(request: Request) -> Response:
    return json_response(models.stats_body(await _store(request).stats()))


def _require_admin(request: Request, what: str) -> None:
    token = _settings(request).admin_token
    if not token:
        raise Forbidden(f"admin {what} is disabled: set ADMIN_TOKEN to enable it")
    given = request.headers.get("authorization", "")
    if not given.startswith("Bearer "):
        raise Unauthorized("Authorization: Bearer <ADMIN_TOKEN> required")
    if not hmac.compare_digest(given[7:].encode(), token.encode()):
        raise Forbidden("wrong admin token")


async def admin_purge(request: Request) -> Response:
    _require_admin(request, "purge")
    deleted = await _store(request).purge()
    return json_response(models.Purged(True, deleted))


async def admin_list_keys(request: Request) -> Response:
    _require_admin(request, "list-keys")
    prefix, cursor, count = models.list_keys_query(request.query_params)
    page = await ops.list_keys(_store(request), prefix, cursor, count)
    return json_response(models.KeyPage(page.keys, len(page.keys), page.cursor))


async def healthz(request: Request) -> Response:
    return json_response(models.Health("ok"))


async def readyz(request: Request) -> Response:
    store = _store(request)
    ok = await store.healthy()
    # On a cluster, ready while any master answers: the others' partitions keep serving.
    cluster = store.cluster_state if store.settings.cluster else None
    if not ok:
        return json_response(models.Ready("unavailable", False, error="Redis is unreachable", cluster=cluster), 503)
    if not store.eviction_checked:  # a worker that started while Redis was down checks now
        await store.check_eviction()
    return json_response(models.Ready("ok", True, cluster=cluster, warning=store.eviction_warning or None))


def routes() -> list[Route]:
    return [
        Route("/api/comments", post_comment, methods=["POST"]),
        Route("/api/comments", get_comments, methods=["GET"]),
        Route("/api/comments/{id}", patch_comment, methods=["PATCH"]),
        Route("/api/conversation", get_conversation, methods=["GET"]),
        Route("/api/godmode-conversation", get_godmode_conversation, methods=["GET"]),
        Route("/api/godmode-session/{session_id}", get_godmode_session, methods=["GET"]),
        Route("/api/godmode-sessions", list_godmode_sessions, methods=["GET"]),
        Route("/api/godmode-session", post_godmode_session, methods=["POST"]),
        Route("/api/queue/claim-next", claim_next, methods=["POST"]),
        Route("/api/queue/claim", claim, methods=["POST"]),
        Route("/api/queue/complete", complete, methods=["POST"]),
        Route("/api/queue/pending", get_pending, methods=["GET"]),
        Route("/api/admin/stats", admin_stats, methods=["GET"]),
        Route("/api/admin/purge", admin_purge, methods=["POST"]),
        Route("/api/admin/list-keys", admin_list_keys, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi_endpoint, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]


# -- errors and CORS ----------------------------------------------------------------------------


async def _app_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AppError)
    if isinstance(exc, StoreUnavailable):
        metrics.REDIS_ERRORS.inc()
    if exc.status >= 500:
        log.warning("%s %s -> %d: %s (%r)", request.method, request.url.path, exc.status, exc.message, exc.__cause__)
    response = json_response(exc.body(), exc.status)
    if isinstance(exc, StoreUnavailable):  # a restart or a failover: seconds, and every write is safe to retry
        response.headers["Retry-After"] = RETRY_AFTER_S
    return response


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code in (404, 405):  # unknown route or method: one answer for both
        return json_response({"error": "Not found"}, 404)
    return json_response({"error": exc.detail}, exc.status_code)


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("%s %s -> 500", request.method, request.url.path, exc_info=exc)
    return json_response({"error": "internal error"}, 500)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # The client left before sending its whole body: nobody reads this, and it is no server error
    # (as a 500 it was logged with two tracebacks per vanished client).
    return json_response({"error": "client disconnected before the body was complete"}, 400)


ERROR_HANDLERS = {AppError: _app_error, HTTPException: _http_error, ClientDisconnect: _client_gone, Exception: _unexpected}

_CORS = [(b"access-control-allow-origin", b"*")]
_PREFLIGHT = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-allow-methods", b"GET, POST, PUT, DELETE, OPTIONS, PATCH"),
    (b"access-control-allow-headers", b"Content-Type, Authorization"),
    (b"access-control-max-age", b"86400"),
    (b"content-length", b"0"),
]


class CORS:
    """Answers OPTIONS on any path with 204 and adds Allow-Origin to every other response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": _PREFLIGHT})
            await send({"type": "http.response.body", "body": b""})
            return None

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *_CORS]
            await send(message)

        return await self.app(scope, receive, send_with_cors)

