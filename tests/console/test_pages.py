"""The console's pages in a real headless Chromium: the dashboard renders and follows the desk
live, and a customer's answer on the survey page — opened from the resolution notice's link —
shows up in the dashboard's CSAT."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from datetime import timedelta
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from services import port_of
from services.console.callers import COOKIE
from shared.local.broker import EmbeddedBroker
from shared.local.sinks import smtp_server
from shared.settings import Settings
from tests.conftest import SettingsFactory
from tests.console.browser import chromium, run, until
from tests.console.support import PRINTER, SIMPLE, desk
from tests.support.credentials import token
from tests.support.waiting import eventually

pytestmark = [pytest.mark.slow, pytest.mark.asyncio]

OPEN_TILE = "return document.querySelector('[data-tile=open] .value')?.textContent.trim()"


def sign_in_link(
    settings: Settings, url: str, actor: str = "ops", ttl: timedelta = timedelta(hours=1)
) -> str:
    return f"{url}/login#token={token(settings, actor, ttl=ttl)}"


async def sign_in(browser: WebDriver, link: str, actor: str = "ops") -> None:
    """Open a sign-in link and click Sign in, as its person would: the link fills the form and
    names whose token it is, and signs in nobody by itself."""
    await run(browser.get, link)
    shown = "return document.getElementById('signin-as')?.textContent"
    assert actor in await until(browser, shown, what="whose token the link holds")
    button = await run(browser.find_element, By.CSS_SELECTOR, "#signin button")
    await run(button.click)
    await until(browser, "return location.pathname === '/'", what="signed in")


async def test_a_sign_in_link_signs_in_nobody_until_its_person_clicks(
    settings: Settings,
) -> None:
    """Login CSRF: a link carrying someone else's token must not sign this browser in as them
    by itself; it fills the form, says whose token it is, and waits for the click."""
    async with desk(settings) as world:
        with chromium() as browser:
            link = sign_in_link(settings, world.url, actor="li.na")
            await run(browser.get, link)
            shown = "return document.getElementById('signin-as')?.textContent"
            assert "li.na" in await until(browser, shown, what="whose token the link holds")
            await asyncio.sleep(1.0)  # an auto-submit would have left the page by now
            assert await run(browser.execute_script, "return location.pathname") == "/login"
            assert await run(browser.execute_script, "return location.hash") == "", "token hidden"
            cookies = await run(browser.get_cookies)
            assert all(c["name"] != COOKIE for c in cookies), "not signed in"
            await sign_in(browser, link, actor="li.na")


async def test_the_dashboard_goes_to_sign_in_when_its_sign_in_ends(settings: Settings) -> None:
    quick = settings.replace(console_stream_recheck="500ms")
    async with desk(quick) as world:
        with chromium() as browser:
            link = sign_in_link(quick, world.url, ttl=timedelta(seconds=5))
            await sign_in(browser, link)
            await until(browser, "return document.getElementById('live').className === 'live on'")
            # The token expires: the stream says so, and the page leaves for the sign-in form
            # instead of showing "reconnecting" over figures it may no longer see.
            await until(
                browser,
                "return location.pathname === '/login'",
                timeout=20,
                what="back at the sign-in form",
            )


async def test_the_dashboard_renders_and_its_tiles_follow_the_desk_without_a_reload(
    settings: Settings, tmp_path: Path
) -> None:
    async with desk(settings) as world:
        await world.request(0, **SIMPLE)
        await world.request(1, **PRINTER)
        tickets = await world.tickets("ops", 2, status="assigned")
        with chromium() as browser:
            await sign_in(browser, sign_in_link(settings, world.url))
            assert await run(lambda: browser.title) == "Service desk console"
            assert await until(browser, OPEN_TILE) == "2"
            await until(browser, "return document.getElementById('live').className === 'live on'")
            tiles = "return document.querySelectorAll('.kpi').length"
            assert await run(browser.execute_script, tiles) == 7
            await run(browser.execute_script, "window.sameDocument = true")

            # A ticket changes: its row arrives in the feed and the status table follows.
            ticket = tickets[0]
            sent = await world.client(ticket["agent_id"]).post(
                f"/api/tickets/{ticket['number']}/commands", json={"type": "accept"}
            )
            assert sent.status_code == 202
            await until(
                browser,
                f"return document.querySelector('#feed [data-number=\"{ticket['number']}\"]')"
                "?.getAttribute('data-status') === 'accepted'",
                what="the changed ticket in the live feed",
            )
            # A new request: the open-tickets tile counts it.
            await world.request(2, **SIMPLE)
            assert await until(browser, f"{OPEN_TILE.removesuffix('.trim()')}.trim() === '3'")
            assert await run(browser.execute_script, "return window.sameDocument") is True
            await run(browser.save_screenshot, str(tmp_path / "dashboard.png"))

            # In Chinese, the same tiles.
            await run(browser.get, f"{world.url}/?lang=zh")
            heading = "return document.querySelector('.card h2')?.textContent"
            assert await until(browser, heading) == "各组未关闭工单"


async def test_a_survey_answered_in_the_browser_shows_up_in_csat(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    with smtp_server() as mail:
        settings = make_settings(smtp_host="127.0.0.1", smtp_port=mail.port)
        console = f"http://127.0.0.1:{port_of(settings, 'console')}"
        settings = settings.replace(notify_console_url=console)
        async with desk(settings, "notify") as world:
            customer = {"name": "Ann", "email": "ann@example.com", "language": "en"}
            await world.request(0, **SIMPLE, customer=customer)
            [ticket] = await world.tickets("ops", 1, status="assigned")
            agent = world.client(ticket["agent_id"])
            for body in ({"type": "accept"}, {"type": "resolve", "resolution": "New password"}):
                sent = await agent.post(f"/api/tickets/{ticket['number']}/commands", json=body)
                decided = await world.decided(agent, sent.json()["command_id"])
                assert decided["status"] == "accepted"
            resolved = await eventually(
                lambda: _mail(mail, "is resolved"), what="the resolution notice"
            )
            [link] = re.findall(r"http://127\.0\.0\.1:\d+/survey/\S+", resolved)
            # The token after "#": no server or proxy between the customer and the console
            # sees it (a browser never sends a fragment); the page's script posts it.
            assert link.startswith(f"{console}/survey/{ticket['number']}#token=")

            with chromium() as browser:
                await run(browser.get, link)
                title = "return document.querySelector('#rating') && document.title"
                assert await until(browser, title, what="the survey opened") == "How did we do?"
                assert "token" not in await run(lambda: browser.current_url)
                five = await run(browser.find_element, By.CSS_SELECTOR, "label.score:last-child")
                await run(five.click)
                comment = await run(browser.find_element, By.ID, "comment")
                await run(comment.send_keys, "Quick and kind")
                await run(browser.save_screenshot, str(tmp_path / "survey.png"))
                submit = await run(browser.find_element, By.CSS_SELECTOR, "#rating button")
                await run(submit.click)
                state = "return document.getElementById('outcome')?.dataset.state"
                assert await until(browser, state, what="the answer") == "thanks"
                await run(browser.get, link)  # the same link again
                assert await until(browser, state) == "done"
                assert "already recorded" in await run(lambda: browser.page_source)

                await sign_in(browser, sign_in_link(settings, world.url))
                csat = "return document.querySelector('[data-tile=csat] .value')?.textContent"
                assert await until(browser, csat, what="CSAT") == "100.0 %"
                note = "return document.querySelector('[data-tile=csat] .note').textContent"
                assert "1 rated" in await run(browser.execute_script, note)


async def test_the_survey_page_changes_language_and_keeps_its_link(settings: Settings) -> None:
    """The language links were ``?lang=zh``: on the survey page they dropped the link's token,
    so the customer who asked for Chinese was told the link was invalid. They keep it in the
    fragment, where it never reaches a server; a link with the token in its query (sent before
    the fragment) still opens the survey."""
    async with desk(settings) as world:
        customer = {"name": "Ann", "email": "ann@example.com", "language": "en"}
        await world.request(0, **SIMPLE, customer=customer)
        [ticket] = await world.tickets("ops", 1)
        number = ticket["number"]
        survey = world.client("customer", ticket=number).headers["authorization"][7:]
        title = "return document.querySelector('#rating') && document.title"
        with chromium() as browser:
            await run(browser.get, f"{world.url}/survey/{number}#token={survey}")
            assert await until(browser, title) == "How did we do?"
            chinese = await run(browser.find_element, By.LINK_TEXT, "中文")
            assert await run(chinese.get_attribute, "href") == (
                f"{world.url}/survey/{number}?lang=zh#token={survey}"
            )
            await run(chinese.click)
            assert await until(browser, title, what="the page in Chinese") == "服务满意度调查"
            assert await run(lambda: browser.current_url) == f"{world.url}/survey/{number}?lang=zh"
            english = await run(browser.find_element, By.LINK_TEXT, "English")
            await run(english.click)
            assert await until(browser, title, what="back in English") == "How did we do?"

            await run(browser.get, f"{world.url}/survey/{number}?token={survey}")
            assert await until(browser, title, what="an older link") == "How did we do?"
            await run(browser.get, f"{world.url}/survey/{number}#token=not.a.token")
            outcome = "return document.querySelector('#outcome:not([data-state=opening])')"
            assert await until(browser, outcome + "?.dataset.state", what="forged") == "invalid"


async def _mail(server: object, subject: str) -> str:
    for message in getattr(server, "messages", []):
        if subject in str(message["Subject"]):
            body = message.get_body(("plain",))
            return str(body.get_content()) if body is not None else ""
    return ""


@pytest.mark.asyncio
async def test_a_score_sent_while_the_broker_is_away_gets_the_form_back_as_it_was(
    make_settings: SettingsFactory,
) -> None:
    """The customer was answered a bare JSON 500 and lost their comment; now the page asks them
    to send it again, with their score and comment (escaped) still in the form."""
    broker = EmbeddedBroker()
    settings = make_settings(kafka_bootstrap_servers=broker.start(), kafka_request_timeout_ms=1500)
    try:
        async with desk(settings) as world:
            await world.request(0, **SIMPLE)
            [ticket] = await world.tickets("ops", 1)
            number = ticket["number"]
            customer = world.client("customer", ticket=number).headers["authorization"][7:]
            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGSTOP)
            try:
                answer = await world.client().post(
                    f"/survey/{number}",
                    data={"token": customer, "score": "4", "comment": "Fixed <b>fast</b>"},
                )
            finally:
                os.kill(broker.pid, signal.SIGCONT)
            assert answer.status_code == 503
            assert answer.headers["content-type"].startswith("text/html")
            assert 'data-state="try_again"' in answer.text
            assert ">Fixed &lt;b&gt;fast&lt;/b&gt;</textarea>" in answer.text
            assert re.search(r'value="4" required checked', answer.text)
    finally:
        broker.stop()


@pytest.mark.asyncio
async def test_one_survey_link_sends_dispatch_only_so_many_scores(settings: Settings) -> None:
    """Each score posted was a command to dispatch, however many came (50 at once from one
    link all went out). Now a ticket's are counted: past the limit the form comes back, 429
    with Retry-After, and no command is sent."""
    capped = settings.replace(console_survey_limit=2, console_survey_window="1h")
    async with desk(capped) as world:
        await world.request(0, **SIMPLE)
        [ticket] = await world.tickets("ops", 1)
        number = ticket["number"]
        customer = world.client("customer", ticket=number).headers["authorization"][7:]
        link = world.client()
        answers = [
            await link.post(
                f"/survey/{number}", data={"token": customer, "score": "3", "comment": f"#{n}"}
            )
            for n in range(4)
        ]
        assert [a.status_code for a in answers[2:]] == [429, 429]
        assert int(answers[2].headers["Retry-After"]) > 0
        assert 'data-state="try_again"' in answers[3].text and ">#3</textarea>" in answers[3].text
        sent = await world.kafka.all_records("tickets.commands")
        assert len([r for r in sent if b"record_satisfaction" in r.value]) == 2
