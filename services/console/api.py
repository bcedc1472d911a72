"""The console's HTTP API (``/api/...``), built with FastAPI: its OpenAPI document comes from the
routes and the models of :mod:`services.console.contract` (``docs/openapi.json``, ``desk
openapi``).

Every request names its caller with a bearer token (:mod:`services.console.callers`); what they
may see follows :mod:`services.console.visibility`. Errors are JSON ``{"code", "message"}`` with a
stable code, never a stack trace: 400 unreadable JSON or cursor, 401 no or bad token, 403 not
the caller's to see or do, 404 unknown (a path holding NUL too), 409 a command id someone else
used, 413 body too large, 422 not a valid request or command (``nul_character``: a query
parameter holding NUL, which no database text holds), 429 too many requests (``Retry-After``),
503 broker unavailable, 500 anything else (logged). The HTTP channel for customers' requests
(``POST /requests``) is :mod:`services.console.inbox`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, get_args
from urllib.parse import quote

from aiokafka.errors import KafkaError
from fastapi import APIRouter, Body, Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import Histogram
from pydantic import AfterValidator, BaseModel, StringConstraints
from starlette.datastructures import QueryParams
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console import board, courier, listing
from services.console.allowance import retry_after
from services.console.callers import COOKIE, Callers, bearer, token_of
from services.console.contract import (
    AgentView,
    CommandAccepted,
    CommandStatus,
    Dashboard,
    Me,
    Problem,
    QueueView,
    SlaState,
    TicketDetail,
    TicketPage,
    TicketStatus,
)
from services.console.stream import CannotCheck, ChangeStream
from services.console.visibility import NotAPerson, Viewer, check_kind, viewer
from services.intake.contract import Reason
from services.policy import Policy
from services.vocabulary import Complexity
from shared.credentials import Credential, Unauthenticated
from shared.database import Connection
from shared.logging import get_logger
from shared.policyfile import PolicySchedule
from shared.service import Service

GroupId = Annotated[str, StringConstraints(max_length=60)]
MAX_GROUPS = 60
"""Groups one ticket query may name (the shipped policy has a dozen)."""


def _count(choices: Any) -> int:
    """How many values a ``Literal`` allows: a filter naming more repeats one."""
    return len(get_args(choices))


log = get_logger(__name__)
ANSWERED = Histogram(
    "desk_console_request_seconds",
    "Time to answer an HTTP request of the console, by route and status.",
    ["route", "status"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
UNPARSED = "the body is not JSON that can be read: not UTF-8, nested too deep or a number too long"
STATUS_TEXT = {
    404: "not_found",
    405: "method_not_allowed",
    413: "body_too_large",
    415: "unsupported_media_type",
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        field: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers, self.field = headers, field


class Console:
    """What the console's HTTP side works with; the service is attached once it is built."""

    def __init__(
        self,
        policy: PolicySchedule[Policy],
        callers: Callers,
        courier: courier.Courier,
        *,
        recheck: timedelta = timedelta(seconds=15),
        streams_per_caller: int = 8,
    ):
        self.policy = policy
        self.callers = callers
        self.courier = courier
        self.stream = ChangeStream(streams_per_caller)
        self.recheck = recheck
        """How often an open stream checks its caller again (``console_stream_recheck``)."""
        self._service: Service | None = None

    @property
    def service(self) -> Service:
        if self._service is None:
            raise RuntimeError("the console's service is not attached")
        return self._service

    def attach(self, service: Service) -> None:
        self._service = service

    def policy_at(self, moment: datetime) -> Policy:
        """The policy version in force at ``moment`` by the service's clock."""
        return self.policy.in_force(moment).policy


@dataclass
class Session:
    """One request's caller, connection and moment."""

    conn: Connection
    viewer: Viewer
    credential: Credential
    token: str
    now: datetime


async def session(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> AsyncIterator[Session]:
    """The request's caller (401, 403), with a connection and the service clock's now. The
    token's signature, claims and kind are checked first, holding nothing: only a person's
    token that verifies takes a connection (its time needs the clock, which reads the
    database), so forged ones, customers' and channel clients' cannot empty the pool."""
    console: Console = request.app.state.console
    token = token_of(authorization, request.cookies.get(COOKIE))
    credential = identify_person(console, token)
    service = console.service
    async with service.pool.acquire() as conn:
        now = await service.clock.now(conn)
        person = admit(console, credential, now)
        assert token is not None
        yield Session(conn, person, credential, token, now)


# ``scope="function"``: the connection goes back to the pool when the handler returns, before
# the answer is written — a desk that reads slowly (or never) holds a socket, not the pool.
Caller = Annotated[Session, Depends(session, scope="function")]


@asynccontextmanager
async def sending(console: Console) -> AsyncIterator[None]:
    """One of the courier's sending slots (:meth:`courier.Courier.slot`); 503 with
    Retry-After when none frees."""
    try:
        async with console.courier.slot():
            yield
    except courier.Busy as busy:
        wait = console.courier.settings.console_send_wait.total_seconds()
        log.warning("not sent: no sending slot freed", waited_s=wait)
        raise ApiError(
            503, "broker_unavailable", f"{busy}; retry", {"Retry-After": retry_after(wait)}
        ) from None


async def sender(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> AsyncIterator[Session]:
    """:func:`session` inside a sending slot, taken before the connection: a caller waiting for
    one while the broker is slow holds no connection. The header's token is checked before
    either: a forged one, or one of a kind no person holds, takes no slot."""
    console: Console = request.app.state.console
    _header_only(authorization)
    identify_person(console, bearer(authorization))
    async with sending(console), asynccontextmanager(session)(request, authorization) as s:
        yield s


Sender = Annotated[Session, Depends(sender, scope="function")]


async def watcher(
    request: Request, authorization: Annotated[str | None, Header()] = None
) -> Viewer:
    """The caller of a live stream (401, 403), checked with a connection borrowed for the check
    alone: a stream's handler returns at once but its answer lasts as long as a desk stays
    open, and it needs no connection of the request's."""
    console: Console = request.app.state.console
    credential = identify_person(console, token_of(authorization, request.cookies.get(COOKIE)))
    return admit(console, credential, await console.service.clock.now())


async def recheck(request: Request) -> Viewer | None:
    """The stream's caller again, as :func:`watcher` finds them now; None when they are no
    longer let in (the token expired, the directory no longer knows them); :class:`CannotCheck`
    when that cannot be told now (the database away)."""
    try:
        return await watcher(request, request.headers.get("authorization"))
    except ApiError as refused:
        log.info("stream ended: its caller is no longer let in", code=refused.code)
        return None
    except Exception as error:  # fails closed: the stream shows nothing until checked
        log.warning("stream held: its caller could not be checked", error=repr(error))
        raise CannotCheck from error


def api(console: Console, max_body: int) -> FastAPI:
    app = FastAPI(
        title="servicedesk console",
        version="1",
        description="Tickets, queues, agents and commands for agent desks; live changes. "
        "Every request carries `Authorization: Bearer <token>` (`desk token issue AGENT_ID`).",
        openapi_url="/api/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    app.state.console = console
    _errors(app)
    app.include_router(_routes(console))
    app.add_middleware(NoNul)
    app.add_middleware(BodyLimit, max_bytes=max_body)
    app.add_middleware(Timing)
    return app


class Timing:
    """Every answer's time, by route template (never the raw path: numbers are unbounded)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def sent(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                route = scope.get("route")
                ANSWERED.labels(getattr(route, "path", "other"), str(status[0])).observe(
                    time.perf_counter() - started
                )
            await send(message)

        await self.app(scope, receive, sent)


class NoNul:
    """Refuse a path or query parameter holding NUL before any route reads it, for every route
    at once (the API, the pages, ``POST /requests``): PostgreSQL text cannot hold NUL, so such a
    value would reach the database only to fail there (a 500). A path with NUL names nothing
    (404); a query parameter with it is 422 ``nul_character``, intake's code for a NUL."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        refusal = _nul_refusal(scope) if scope["type"] == "http" else None
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _nul_refusal(scope: Any) -> JSONResponse | None:
    """The answer to a request whose path or query holds NUL (decoded, as routes read them)."""
    if "\x00" in scope["path"]:
        return _problem(404, "not_found", "no such resource: a path holding NUL names nothing")
    for name, value in QueryParams(scope.get("query_string", b"")).multi_items():
        if "\x00" in name or "\x00" in value:
            field = name.replace("\x00", "")
            return _problem(
                422, Reason.NUL_CHARACTER, f"{field}: NUL character in the value", field=field
            )
    return None


class BodyLimit:
    """Refuse (413) a request body over ``max_bytes`` before anything reads it: declared too
    large, or sent in chunks that add up to too much."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"0")
        if not declared.isdigit() or int(declared) > self.max_bytes:
            await _problem(413, "body_too_large", f"at most {self.max_bytes} bytes")(
                scope, receive, send
            )
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnected: let the app see it
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _problem(413, "body_too_large", f"at most {self.max_bytes} bytes")(
                    scope, receive, send
                )
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Any:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def _problem(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = Problem(code=code, message=message, **extra).model_dump(exclude_defaults=True)
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": "Bearer"}
    return JSONResponse(body, status_code=status, headers=headers)


def _errors(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        extra = {"field": error.field} if error.field else {}
        return _problem(error.status, error.code, error.message, error.headers, **extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400:  # FastAPI's own 400 is a body it could not parse
            return _problem(400, "invalid_json", UNPARSED)
        code = STATUS_TEXT.get(error.status_code, "http_error")
        return _problem(error.status_code, code, str(error.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = list(error.errors())
        if any(p.get("type") == "json_invalid" for p in problems):
            return _problem(400, "invalid_json", "the body is not JSON")
        shown = [
            {"loc": [str(p) for p in e.get("loc", ())], "message": str(e.get("msg", ""))[:200]}
            for e in problems[:10]
        ]
        first = shown[0] if shown else {"loc": [], "message": "invalid"}
        message = f"{'.'.join(first['loc'])}: {first['message']}"
        return _problem(422, "invalid_request", message, errors=shown)

    @app.exception_handler(Exception)
    async def failed(request: Request, error: Exception) -> JSONResponse:
        log.exception("request failed", path=request.url.path)
        return _problem(500, "internal_error", "the console could not answer; it is logged")


def problems(texts: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """An operation's error answers for the OpenAPI document: each a :class:`Problem`."""
    return {code: {"model": Problem, "description": text} for code, text in texts.items()}


ERRORS = problems(
    {
        401: "No token, or not a valid one now.",
        403: "The caller may not see or do this.",
        404: "Unknown.",
    }
)


def _routes(console: Console) -> APIRouter:
    router = APIRouter(prefix="/api", responses=ERRORS)

    @router.get("/me", response_model=Me, summary="Who the token stands for, and what they see.")
    async def me(s: Caller) -> Me:
        v = s.viewer
        return Me(
            subject=v.subject,
            name=v.name,
            role=v.role,
            groups=sorted(v.groups) if v.groups is not None else None,
        )

    @router.get("/tickets", response_model=TicketPage, summary="Tickets, newest first.")
    async def tickets(  # noqa: PLR0917 - one parameter per filter: FastAPI reads them
        s: Caller,
        # Every list bounded: its values' count (at most each one once) and each value's size.
        status: Annotated[list[TicketStatus], Query(max_length=_count(TicketStatus))] = [],  # noqa: B006 - FastAPI reads it
        group: Annotated[list[GroupId], Query(max_length=MAX_GROUPS)] = [],  # noqa: B006
        agent: Annotated[str | None, Query(max_length=120)] = None,
        customer: Annotated[
            str | None, Query(max_length=200, description="Customer id, email or phone.")
        ] = None,
        complexity: Annotated[list[Complexity], Query(max_length=_count(Complexity))] = [],  # noqa: B006
        sla: Annotated[list[SlaState], Query(max_length=_count(SlaState))] = [],  # noqa: B006
        q: Annotated[
            str | None,
            Query(max_length=200, description="Text in the subject."),
            AfterValidator(listing.searchable),
        ] = None,
        limit: Annotated[int, Query(ge=1, le=listing.MAX_PAGE)] = 50,
        after: Annotated[str | None, Query(max_length=200)] = None,
    ) -> Response:
        wanted = listing.TicketFilter(
            status=list(status),
            group=list(group),
            agent=agent,
            customer=customer,
            complexity=list(complexity),
            sla=list(sla),
            text=q,
        )
        try:
            page = await listing.tickets(s.conn, s.viewer, wanted, limit=limit, after=after)
        except listing.BadCursor as error:
            raise ApiError(400, "invalid_cursor", str(error)) from None
        except listing.SearchTooSlow as error:
            raise ApiError(422, "invalid_request", f"query.q: {error}", field="q") from None
        return _answer(page)

    async def visible_ticket(s: Session, number: str) -> TicketDetail:
        found = await listing.ticket(s.conn, number)
        if found is None:
            raise ApiError(404, "not_found", f"no ticket {number}")
        detail, asked = found
        _refuse_unseen(s, number, detail.group_id, detail.agent_id, asked)
        return detail

    async def commanded_ticket(s: Session, number: str) -> None:
        """404 or 403 unless the caller sees the ticket, read without its timeline (a command
        needs only where the ticket is)."""
        found = await listing.ticket_facts(s.conn, number)
        if found is None:
            raise ApiError(404, "not_found", f"no ticket {number}")
        _refuse_unseen(s, number, found.group_id, found.agent_id, found.specialist_group)

    @router.get(
        "/tickets/{number}", response_model=TicketDetail, summary="One ticket and its timeline."
    )
    async def ticket(s: Caller, number: Annotated[str, Path(max_length=60)]) -> Response:
        return _answer(await visible_ticket(s, number))

    @router.post(
        "/tickets/{number}/commands",
        status_code=202,
        response_model=CommandAccepted,
        summary="Send a ticket command in the caller's name.",
        description="The body is a command of the tickets.commands contract (README); "
        "`ticket_number` comes from the path and `command_id` is made unless given (the same "
        "id again from the same caller is the same command: sent again only if dispatch refused "
        "it; with another command, 422 command_id_reused). 202: sent; dispatch decides.",
        openapi_extra=_body("ticket"),
        responses={409: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}},
    )
    async def ticket_command(
        s: Sender,
        number: Annotated[str, Path(max_length=60)],
        body: Annotated[dict[str, Any], Body()],
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        _header_only(authorization)
        await commanded_ticket(s, number)
        return await _send(console, s, "ticket", number, body)

    @router.get("/queues", response_model=list[QueueView], summary="Queued and open, per group.")
    async def queues(s: Caller) -> list[QueueView]:
        return await listing.queues(s.conn, s.viewer)

    @router.get(
        "/agents", response_model=list[AgentView], summary="Agents, shift, load and capacity."
    )
    async def agents(s: Caller) -> list[AgentView]:
        return await listing.agents(s.conn, s.viewer)

    @router.post(
        "/agents/{agent_id}/commands",
        status_code=202,
        response_model=CommandAccepted,
        summary="Send an agent command (shift, capacity) in the caller's name.",
        openapi_extra=_body("agent"),
        responses={409: {"model": Problem}, 422: {"model": Problem}, 503: {"model": Problem}},
    )
    async def agent_command(
        s: Sender,
        agent_id: Annotated[str, Path(max_length=120)],
        body: Annotated[dict[str, Any], Body()],
        authorization: Annotated[str | None, Header()] = None,
    ) -> JSONResponse:
        _header_only(authorization)
        groups = await listing.agent_groups(s.conn, agent_id)
        if groups is None:
            raise ApiError(404, "not_found", f"no agent {agent_id}")
        if not s.viewer.sees_agent(agent_id, groups):
            raise ApiError(403, "forbidden", f"{agent_id} is not in your part of the desk")
        return await _send(console, s, "agent", agent_id, body)

    @router.get(
        # A path parameter: a sender's own id may hold a slash (the Location escapes it).
        "/commands/{command_id:path}",
        response_model=CommandStatus,
        summary="pending until dispatch decides; then accepted, or refused with its reason.",
    )
    async def command(s: Caller, command_id: Annotated[str, Path(max_length=120)]) -> CommandStatus:
        found = await courier.status(s.conn, command_id)
        # Another person's command answers as an unknown one: a 403 would tell whoever guesses
        # ids which exist.
        if found is None or (found[0] != s.viewer.subject and not s.viewer.sees_everything):
            raise ApiError(404, "not_found", f"no command {command_id} of yours")
        return found[1]

    @router.get("/dashboard", response_model=Dashboard, summary="The dashboard's figures.")
    async def dashboard(s: Caller) -> Dashboard:
        return await board.dashboard(s.conn, s.viewer, console.policy_at(s.now), s.now)

    @router.get(
        "/stream",
        summary="Server-sent events: `ticket` (a ticket the caller sees changed: its summary), "
        "`board` (the dashboard's figures may have changed), `resync` (reload), `signed_out` "
        "(the caller's token expired or they left the directory: the stream ends). 429 when "
        "the caller already holds DESK_CONSOLE_STREAMS_PER_CALLER open.",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}},
            429: {"model": Problem, "description": "Too many streams open."},
        },
    )
    async def stream(
        request: Request, person: Annotated[Viewer, Depends(watcher)]
    ) -> StreamingResponse:
        if not console.stream.admits(person):
            raise ApiError(
                429,
                "too_many_streams",
                f"at most {console.stream.per_caller} streams open at once per person",
                {"Retry-After": "5"},
            )
        body = console.stream.events(
            person,
            console.service.closing,
            request.is_disconnected,
            recheck=lambda: recheck(request),
            every=console.recheck.total_seconds(),
        )
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router


def identify(console: Console, token: str | None) -> Credential:
    """401 unless the token's signature and claims hold. CPU only: checked before a request
    takes a connection or a sending slot, which forged tokens would otherwise starve."""
    try:
        return console.callers.read(token)
    except Unauthenticated as error:
        raise ApiError(401, "unauthenticated", error.detail) from None


def identify_person(console: Console, token: str | None) -> Credential:
    """:func:`identify`, and 403 for a token no person holds (a customer's, a channel
    client's, ``system``'s): its kind is in the token, so it is refused before the request
    takes a sending slot or a connection. Whether the directory still knows the person needs
    the clock (:func:`admit`)."""
    credential = identify(console, token)
    try:
        check_kind(credential)
    except NotAPerson as error:
        raise ApiError(403, "forbidden", str(error)) from None
    return credential


def admit(console: Console, credential: Credential, now: datetime) -> Viewer:
    """The person an :func:`identify`-ed credential stands for at ``now``: 401 for a token not
    valid then, 403 for one that stands for no one of the directory."""
    try:
        console.callers.check_time(credential, now)
    except Unauthenticated as error:
        raise ApiError(401, "unauthenticated", error.detail) from None
    try:
        return viewer(credential, console.policy_at(now))
    except NotAPerson as error:
        raise ApiError(403, "forbidden", str(error)) from None


def _refuse_unseen(
    s: Session, number: str, group_id: str | None, agent_id: str | None, asked: str | None
) -> None:
    if not s.viewer.sees_ticket(group_id, agent_id, asked):
        raise ApiError(403, "forbidden", f"{number} is not in your part of the desk")


def _answer(model: BaseModel) -> Response:
    """A model the console built (and so validated) as the response body, serialized once: the
    hot reads skip FastAPI's second validation of the declared response model."""
    return Response(model.model_dump_json(), media_type="application/json")


def _header_only(authorization: str | None) -> None:
    """Commands carry their token in the header: a browser's cookie alone sends none, nor does
    a cookie beside a header with a blank token."""
    if not bearer(authorization):
        raise ApiError(401, "unauthenticated", "commands need Authorization: Bearer <token>")


def _body(kind: courier.Kind) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": courier.command_schema(kind)}},
        }
    }


async def _send(
    console: Console,
    s: Session,
    kind: Literal["ticket", "agent"],
    target: str,
    body: dict[str, Any],
) -> JSONResponse:
    try:
        command = courier.shape(kind, target, body, s.viewer.subject)
    except courier.Invalid as error:
        raise ApiError(422, "invalid_command", str(error)) from None
    try:
        sent = await console.courier.send(
            s.conn,
            console.service.producer,
            kind=kind,
            command=command,
            actor=s.viewer.subject,
            token=s.token,
            now=s.now,
        )
    except courier.Taken:
        raise ApiError(
            409, "command_id_taken", "that command id was sent by someone else"
        ) from None
    except courier.Reused:
        raise ApiError(
            422, "command_id_reused", "that command id was sent before with another command"
        ) from None
    except (TimeoutError, OSError, KafkaError) as error:
        log.warning("command not sent", error=repr(error))
        raise ApiError(503, "broker_unavailable", "the command could not be sent; retry") from None
    # Escaped: a command id is the sender's to choose, and "../x" or "a?b" must not make the
    # Location point elsewhere than at its status.
    location = f"/api/commands/{quote(sent.command_id, safe='')}"
    accepted = CommandAccepted(command_id=sent.command_id, location=location)
    return JSONResponse(accepted.model_dump(), status_code=202, headers={"Location": location})
