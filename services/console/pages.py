"""The console's pages: the operators' dashboard (``/``), signing in, the customers' survey.

Server-rendered (Jinja2, autoescaped) with one small script and one stylesheet shipped in the
package; nothing is fetched from anywhere else. The dashboard's tiles are one template
(``tiles.j2``): the page renders it, and the script swaps in a fresh render (``/board``) when
the stream says something changed, so tiles update live without a reload.

The browser carries the person's token in an HttpOnly, SameSite=Strict cookie set by signing in
(``/login``; ``desk up`` prints a link that fills it in for its operator). The survey page takes the
customer token of the resolution notice's link and sends the score as a
``record_satisfaction`` command signed with it: the same path as any desk's command. The link
carries the token in its fragment (``/survey/N#token=…``), which no proxy or server log sees:
the page's script posts it to open the survey. Links with ``?token=`` (sent before) still work.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime
from functools import partial
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from services.console import board, courier, listing
from services.console.allowance import Allowance, retry_after
from services.console.api import ApiError, Console, admit, identify_person
from services.console.callers import COOKIE, MAX_TOKEN_CHARS
from services.console.phrases import PHRASES, Language, phrase, pick
from services.console.settings import ConsoleSettings
from services.console.visibility import Viewer
from shared.credentials import Unauthenticated
from shared.logging import get_logger

PACKAGE = Path(str(files("services.console")))
LANGUAGE_COOKIE = "desk_lang"
_SCORES = (1, 2, 3, 4, 5)
_SCORES_BY_TEXT = {str(score): score for score in _SCORES}
log = get_logger(__name__)
MAX_COMMENT_CHARS = 4000
MAX_REASON_CHARS = 4000
"""Longest "what is still wrong" a customer's reopen from the survey page carries."""
MAX_NUMBER_CHARS = 64
"""Longest ticket number the survey's opening page repeats back (anything longer: invalid)."""


def _environment() -> Environment:
    environment = Environment(
        loader=FileSystemLoader(PACKAGE / "templates"),
        autoescape=select_autoescape(["j2", "html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["duration"] = duration
    environment.filters["percent"] = percent
    return environment


def duration(seconds: float | None) -> str:
    """45 s, 12 min, 3.5 h, 2.0 d."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def percent(ratio: float | None) -> str:
    return "–" if ratio is None else f"{ratio * 100:.1f} %"


def pages(app: FastAPI, console: Console, settings: ConsoleSettings) -> None:  # noqa: PLR0915
    """Add the pages to the console's app (not part of its OpenAPI document)."""
    templates = _environment()
    app.mount("/static", StaticFiles(directory=PACKAGE / "static"), name="static")

    surveys = Allowance(settings.console_survey_limit, settings.console_survey_window)

    def render(
        name: str,
        language: Language,
        status: int = 200,
        *,
        fragment: Mapping[str, str] | None = None,
        **values: Any,
    ) -> HTMLResponse:
        """The page; ``fragment`` holds what its own address carries past the ``#`` (the
        survey's token), which its language links keep."""

        def t(key: str, **fields: str) -> str:
            return phrase(key, language, **fields)

        def in_language(code: Language) -> str:
            kept = "#" + urlencode(fragment) if fragment else ""
            return "?" + urlencode({"lang": code}) + kept

        page = templates.get_template(name).render(
            lang=language, t=t, in_language=in_language, **values
        )
        response = HTMLResponse(page, status_code=status)
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self'; "
            "style-src-attr 'unsafe-inline'; script-src 'self'; "
            "frame-ancestors 'none'; form-action 'self'"
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    def language_of(request: Request, lang: str | None, fallback: str | None = None) -> Language:
        return pick(
            lang,
            request.cookies.get(LANGUAGE_COOKIE),
            request.headers.get("accept-language"),
            fallback,
        )

    def remember_language(response: Response, lang: str | None, language: Language) -> None:
        if lang:
            response.set_cookie(
                LANGUAGE_COOKIE, language, max_age=365 * 86400, samesite="strict", httponly=True
            )

    async def signed_in(request: Request) -> tuple[Viewer, datetime] | None:
        """The cookie's person and the clock's now; None when not signed in. A cookie that
        does not verify, or is no person's, is turned away before a connection is taken for the
        clock."""
        try:
            credential = identify_person(console, request.cookies.get(COOKIE))
        except ApiError:
            return None
        service = console.service
        async with service.pool.acquire() as conn:
            now = await service.clock.now(conn)
        try:
            return admit(console, credential, now), now
        except ApiError:
            return None

    async def figures(viewer: Viewer, now: datetime) -> Any:
        async with console.service.pool.acquire() as conn:
            return await board.dashboard(conn, viewer, console.policy_at(now), now)

    @app.get("/", include_in_schema=False, response_model=None)
    async def dashboard(request: Request, lang: str | None = None) -> Response:
        language = language_of(request, lang)
        found = await signed_in(request)
        if found is None:
            return RedirectResponse(f"/login?lang={language}", status_code=303)
        viewer, now = found
        response = render(
            "dashboard.j2",
            language,
            viewer=viewer,
            board=await figures(viewer, now),
            phrases={k: phrase(k, language) for k in PHRASES if k.startswith("status_")},
        )
        remember_language(response, lang, language)
        return response

    @app.get("/board", include_in_schema=False, response_model=None)
    async def tiles(request: Request, lang: str | None = None) -> Response:
        language = language_of(request, lang)
        found = await signed_in(request)
        if found is None:
            return Response(status_code=401)
        viewer, now = found
        return render("tiles.j2", language, viewer=viewer, board=await figures(viewer, now))

    @app.get("/login", include_in_schema=False)
    async def login_page(request: Request, lang: str | None = None) -> HTMLResponse:
        return render("login.j2", language_of(request, lang), refused=False)

    @app.post("/login", include_in_schema=False, response_model=None)
    async def login(request: Request, lang: str | None = None) -> Response:
        language = language_of(request, lang)
        if cross_site(request):  # another site signing this browser in as someone else
            return render("login.j2", language, status=403, refused=True)
        [token] = await _fields(request, "token")
        if not token.strip() or len(token) > MAX_TOKEN_CHARS:
            return render("login.j2", language, status=401, refused=True)
        try:  # a forged token, or one no person holds, takes no connection
            credential = identify_person(console, token.strip())
        except ApiError:
            return render("login.j2", language, status=401, refused=True)
        service = console.service
        async with service.pool.acquire() as conn:
            now = await service.clock.now(conn)
        try:
            admit(console, credential, now)
        except ApiError:
            return render("login.j2", language, status=401, refused=True)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            token.strip(),
            max_age=max(1, int((credential.expires_at - now).total_seconds())),
            httponly=True,
            samesite="strict",
            # The console serves plain HTTP behind a TLS proxy: the scheme it sees says nothing.
            secure=settings.secure_cookie,
        )
        return response

    @app.post("/logout", include_in_schema=False, response_model=None)
    async def logout(request: Request) -> Response:
        if cross_site(request):
            return Response(status_code=403)
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            COOKIE, httponly=True, samesite="strict", secure=settings.secure_cookie
        )
        return response

    async def customer(
        number: str, token: str, request: Request, lang: str | None
    ) -> tuple[Language, dict[str, Any]] | None:
        """The survey page's language and what it shows, if ``token`` is a customer token for
        this ticket that allows rating it (None otherwise). Its signature and claims are checked
        before a connection is taken, and of the ticket only what the page shows is read."""
        try:
            credential = console.callers.read(token)
        except Unauthenticated:
            return None
        if (
            credential.kind != "customer"
            or credential.ticket != number
            or "record_satisfaction" not in credential.commands
        ):
            return None
        service = console.service
        async with service.pool.acquire() as conn:
            now = await service.clock.now(conn)
            try:
                console.callers.check_time(credential, now)
            except Unauthenticated:
                return None
            ticket = await listing.ticket_facts(conn, number)
        language = language_of(request, lang, ticket.language if ticket else None)
        shown = {"number": number, "token": token, "ticket": ticket, "scores": _SCORES}
        return language, {**shown, "fragment": {"token": token}}

    @app.get("/survey/{number}", include_in_schema=False)
    async def survey(
        request: Request,
        number: str,
        # Unbounded here, bounded below: FastAPI's bound would answer a page with JSON.
        token: str = "",
        lang: str | None = None,
    ) -> HTMLResponse:
        if not token and len(number) <= MAX_NUMBER_CHARS:
            # The link's token is in its fragment: the page's script posts it (step "open").
            return render("survey.j2", language_of(request, lang), state="opening", number=number)
        found = (
            None if len(token) > MAX_TOKEN_CHARS else await customer(number, token, request, lang)
        )
        if found is None:
            return render("survey.j2", language_of(request, lang), status=403, state="invalid")
        language, shown = found
        return render("survey.j2", language, state=_survey_state(shown["ticket"]), **shown)

    @app.post("/survey/{number}", include_in_schema=False)
    async def rate(request: Request, number: str, lang: str | None = None) -> HTMLResponse:
        token, score, comment, step, reason = await _fields(
            request, "token", "score", "comment", "step", "reason"
        )
        found = (
            None if len(token) > MAX_TOKEN_CHARS else await customer(number, token, request, lang)
        )
        if found is None:
            return render("survey.j2", language_of(request, lang), status=403, state="invalid")
        language, shown = found
        if step == "reopen":
            return await reopen(language, shown, token=token, reason=reason.strip())
        if (state := _survey_state(shown["ticket"])) != "ask" or step == "open":
            return render("survey.j2", language, state=state, **shown)
        chosen = _SCORES_BY_TEXT.get(score.strip())
        if chosen is None:
            return render("survey.j2", language, status=422, state="ask", missing=True, **shown)
        if len(comment) > MAX_COMMENT_CHARS:
            return render("survey.j2", language, status=422, state="ask", too_long=True, **shown)
        return await send(language, shown, token=token, score=chosen, comment=comment)

    async def send(
        language: Language, shown: dict[str, Any], *, token: str, score: int, comment: str
    ) -> HTMLResponse:
        """Send the score as the customer's command, unless this ticket's have come too often
        (each is a command to dispatch: one link must not send them without end) or the broker
        is away: then the form again as it was, to send in a moment."""
        number = shown["number"]  # the one its verified token is for
        again = partial(
            render, "survey.j2", language, state="ask", unavailable=True,
            chosen=score, comment=comment, **shown,
        )  # fmt: skip
        if wait := surveys.take(number):
            page = again(status=429)
            page.headers["Retry-After"] = retry_after(wait)
            return page
        body = {"type": "record_satisfaction", "score": score, "comment": comment}
        try:
            decided, reason = await _command(console, settings, number, token=token, body=body)
        except (TimeoutError, OSError, KafkaError) as error:  # the broker away: ask again
            log.warning("survey score not sent", error=repr(error))
            return again(status=503)
        state = {"accepted": "thanks", "pending": "pending"}.get(decided)
        if state is None:  # refused
            state, reason = _RATING_REFUSED.get(reason or "", ("refused", reason))
        return render("survey.j2", language, state=state, reason=reason, **shown)

    async def reopen(
        language: Language, shown: dict[str, Any], *, token: str, reason: str
    ) -> HTMLResponse:
        """The customer rejects the solution (sop.md): their ``reopen`` command, signed with the
        link's token, with what is still wrong — bounded as scores are, per ticket."""
        number = shown["number"]
        again = partial(render, "survey.j2", language, reopen_reason=reason, **shown)
        state = _survey_state(shown["ticket"])
        if not reason or len(reason) > MAX_REASON_CHARS:
            return again(status=422, state=state, reason_invalid=True)
        if wait := surveys.take(number):
            page = again(status=429, state=state, reopen_unavailable=True)
            page.headers["Retry-After"] = retry_after(wait)
            return page
        body = {"type": "reopen", "reason": reason}
        try:
            decided, refusal = await _command(console, settings, number, token=token, body=body)
        except (TimeoutError, OSError, KafkaError) as error:
            log.warning("reopen not sent", error=repr(error))
            return again(status=503, state=state, reopen_unavailable=True)
        if decided == "refused" and refusal not in ("illegal_transition", "reopen_window_passed"):
            return render("survey.j2", language, state="refused", reason=refusal, **shown)
        outcome = {"accepted": "reopened", "pending": "reopen_pending"}.get(decided)
        return render("survey.j2", language, state=outcome or "cannot_reopen", **shown)


_RATING_REFUSED = {
    "already_recorded": ("done", None),
    "illegal_transition": ("not_yet", None),  # not resolved, or reopened meanwhile
}
"""What the page says of dispatch's refusals of a score (the rest: its reason)."""


async def _command(
    console: Console,
    settings: ConsoleSettings,
    number: str,
    *,
    token: str,
    body: dict[str, Any],
) -> tuple[str, str | None]:
    """Send ``body`` as the customer's command; wait a moment for dispatch's decision (not
    while the console is stopping): accepted, refused (with its reason) or pending."""
    service = console.service
    async with console.courier.slot(), service.pool.acquire() as conn:
        now = await service.clock.now(conn)
        try:
            command = courier.shape("ticket", number, body, "customer")
            sent = await console.courier.send(
                conn,
                service.producer,
                kind="ticket",
                command=command,
                actor="customer",
                token=token,
                now=now,
            )
        except courier.Invalid as error:
            return "refused", str(error)
    deadline = asyncio.get_running_loop().time() + settings.console_command_wait.total_seconds()
    # A stopping console answers "pending" at once: the wait must not hold its shutdown up.
    while asyncio.get_running_loop().time() < deadline and not service.closing.is_set():
        async with service.pool.acquire() as conn:
            found = await courier.status(conn, sent.command_id)
        decided = found[1] if found else None
        if decided is not None and decided.status in ("accepted", "refused"):
            return decided.status, decided.reason
        await asyncio.sleep(0.1)
    return "pending", None


async def _fields(request: Request, *names: str) -> list[str]:
    """Form fields as text, read and judged here, never by FastAPI: whatever a browser (or
    anyone) sends — a field missing, a file in its place, no form at all, a broken one — the
    answer is the page, not a JSON error. The body is read once (a second read of one that
    failed finds it consumed) and is bounded by console_max_body before it is read."""
    try:
        form = await request.form()
    except (MultiPartException, HTTPException):
        # Not a form that can be read (inside an app Starlette answers its MultiPartException
        # as a 400 of its own): as if the fields were not there.
        return ["" for _ in names]
    return [value if isinstance(value := form.get(name), str) else "" for name in names]


def _survey_state(ticket: Any) -> str:
    """What the survey page shows before any score: the score already given, else the form.
    Whether the ticket can be rated is dispatch's to say (the console's view may lag the
    resolution whose notice brought the customer here): a refusal then reads "not yet"."""
    return "done" if ticket is not None and ticket.satisfaction is not None else "ask"


def cross_site(request: Request) -> bool:
    """A browser's form post from another site (login CSRF: the attacker's own token set as
    the victim's cookie). Browsers say so in ``Sec-Fetch-Site``, older ones in ``Origin``;
    a client that sends neither is no browser carrying someone's cookies."""
    fetched_from = request.headers.get("sec-fetch-site")
    if fetched_from is not None:
        return fetched_from not in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc != request.headers.get("host", "")
