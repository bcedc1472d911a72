"""Wiring of the console service: what it reads, its read models, its HTTP side (the API, the
pages, the HTTP channel)."""

from __future__ import annotations

from services.console import storage
from services.console.api import Console, api
from services.console.callers import Callers
from services.console.conversations import ChannelMessages, conversations
from services.console.courier import Courier
from services.console.feeds import DeadLetterFeed, PublicEvents
from services.console.inbox import forget_keys, inbox
from services.console.journal import Journal
from services.console.pages import pages
from services.console.settings import ConsoleSettings
from services.dispatch.events import AGENT_COMMANDS, TICKET_COMMANDS
from services.intake.contract import INCOMING_TOPIC
from services.policy import policy_schedule
from shared.keys import KeyRing
from shared.keystore import KeyStore
from shared.migrations import load
from shared.policyfile import keep_in_force
from shared.service import Service
from shared.settings import Settings

MIGRATIONS = load("console", "services.console")


def build(settings: Settings) -> Service:
    own = ConsoleSettings.of(settings)
    journal = Journal("console")
    keys = KeyStore(own)
    read_models = storage.read_models(keys)
    policy = policy_schedule(own)
    console = Console(
        policy,
        Callers(KeyRing.from_settings(own), own.token_max_ttl),
        Courier(own),
        recheck=own.console_stream_recheck,
        streams_per_caller=own.console_streams_per_caller,
    )
    http = api(console, own.console_max_body)
    pages(http, console, own)
    inbox(http, console, own)
    conversations(http, console, keys)

    async def stream_changes(service: Service) -> None:
        await console.stream.follow(service)

    service = Service(
        "console",
        own,
        port=own.console_port,
        description="The people's side: an HTTP API for agent desks, the live dashboard, the "
        "customers' survey page, and the HTTP channel for customers' requests (POST /requests).",
        publishes={},
        subscriptions=[
            PublicEvents(journal, read_models),
            DeadLetterFeed(KeyRing.from_settings(own)),
            ChannelMessages(keys),
        ],
        projections=read_models,
        log=journal,
        workers=[stream_changes, keep_in_force(policy), forget_keys(own)],
        migrations=MIGRATIONS,
        http=http,
        sends=(TICKET_COMMANDS, AGENT_COMMANDS, INCOMING_TOPIC),
        key_store=keys,
    )
    console.attach(service)
    return service
