"""The consumer plumbing: exactly-once effects, poison messages, dead letters (real servers)."""

from __future__ import annotations

import asyncio
import gc
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import asyncpg
import httpx
import pytest
from aiokafka import ConsumerRecord

from services.intake.events import TicketReceived
from shared.database import Connection, connect
from shared.deadletter import NOT_REPUBLISHED, Record, list_dead_letters, replay_dead_letter
from shared.events import EVENTS
from shared.keys import KeyRing
from shared.local.ports import free_port
from shared.provenance import dead_letter_writer
from shared.settings import Settings
from tests.conftest import SettingsFactory
from tests.support import probe
from tests.support.kafka import KafkaProbe
from tests.support.processes import ServiceProcess
from tests.support.services import running
from tests.support.waiting import eventually


async def count(pool_or_conn: asyncpg.Pool | Connection, sql: str, *args: object) -> int:
    return int(await pool_or_conn.fetchval(sql, *args))


@pytest.mark.asyncio
async def test_a_redelivered_message_has_one_effect(settings: Settings, kafka: KafkaProbe) -> None:
    service = probe.build(settings, port=0)
    async with running(service):
        for _ in range(3):
            await kafka.publish(probe.COMMANDS, probe.command("same-id", "c1", 5), key="c1")
        await kafka.publish(probe.COMMANDS, probe.command("other-id", "c1", 1), key="c1")

        async def tallied() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied")

        await eventually(tallied, lambda n: n >= 2, what="two applied bumps")
        await kafka.all_records(probe.COMMANDS)  # let every copy be consumed
        async with service.pool.acquire() as conn:
            events = await service.store.read_stream(conn, "counter-c1")
            assert [e.decode().amount for e in events] == [5, 1]  # type: ignore[attr-defined]
            assert await conn.fetchval("SELECT total FROM tallies WHERE counter = 'c1'") == 6
            assert await count(conn, "SELECT count(*) FROM applied") == 2


@pytest.mark.asyncio
async def test_consumers_of_one_process_share_the_partitions_and_stop_in_turn(
    settings: Settings, kafka: KafkaProbe
) -> None:
    settings = settings.replace(consumer_concurrency=2)
    service = probe.build(settings, port=0, tally=False)
    async with running(service):
        runner = service.consumers[0]

        async def split() -> list[set[object]]:
            return [set(a) for a in runner.assignments]

        first, second = await eventually(split, all, what="both consumers own partitions")
        assert not first & second
        assert len(first | second) == settings.topic_partitions
        for i in range(30):
            await kafka.publish(probe.COMMANDS, probe.command(f"s-{i}", f"c{i}"), key=f"c{i}")

        async def applied() -> int:
            return await count(service.pool, "SELECT count(*) FROM events")

        await eventually(applied, lambda n: n == 30)
    # The rolling stop left the group healthy: the next start joins and goes on.
    again = probe.build(settings, port=0, tally=False)
    async with running(again):
        await kafka.publish(probe.COMMANDS, probe.command("after", "a"), key="a")
        assert await eventually(
            lambda: count(again.pool, "SELECT count(*) FROM events"), lambda n: n == 31
        )


@pytest.mark.asyncio
async def test_a_message_refused_in_a_failed_batch_then_applied_alone_keeps_its_claim(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """A message refused (released) in a batch that then failed is tried again alone, and may be
    applied this time: its refusal in the rolled-back batch must not also forget its id, or the
    same command sent again has a second effect."""
    await kafka.publish(probe.COMMANDS, probe.command("m1", "r", refuse=1), partition=0)
    await kafka.publish(probe.COMMANDS, probe.command("m2", "s", fail="1"), partition=0)
    service = probe.build(settings, port=0)
    async with running(service):

        async def bumped() -> int:
            return await count(service.pool, "SELECT count(*) FROM events")

        await eventually(bumped, lambda n: n == 2, what="both applied once alone")
        await kafka.publish(probe.COMMANDS, probe.command("m1", "r", refuse=1), partition=0)
        await kafka.publish(probe.COMMANDS, probe.command("after", "t"), partition=0)
        await eventually(bumped, lambda n: n >= 3, what="the message after it applied")
        async with service.pool.acquire() as conn:
            events = await service.store.read_stream(conn, "counter-r")
    assert len(events) == 1, "m1 sent again is a repeat: applied once"


@pytest.mark.asyncio
async def test_a_poison_message_is_dead_lettered_while_other_partitions_flow(
    kafka: KafkaProbe,
) -> None:
    settings = kafka.settings.replace(consumer_max_attempts=3, consumer_retry_backoff="1s")
    service = probe.build(settings, port=0)
    before = _metrics()
    async with running(service):
        await kafka.publish(
            probe.COMMANDS, probe.command("poison", "p", fail="always"), partition=0
        )
        await kafka.publish(probe.COMMANDS, probe.command("after-poison", "p"), partition=0)

        async def failing_once() -> float:
            return _metrics(before).get("desk_messages_retried_total", 0.0)

        await eventually(failing_once, lambda n: n >= 1, what="first failed attempt")
        for i, partition in enumerate((1, 2, 1, 2)):
            await kafka.publish(
                probe.COMMANDS, probe.command(f"ok-{i}", f"o{i}"), partition=partition
            )

        async def applied_ok() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied WHERE counter LIKE 'o%'")

        await eventually(applied_ok, lambda n: n == 4, timeout=10, what="other partitions applied")
        # ...while the poison is still being retried, not yet given up on:
        assert await count(service.pool, "SELECT count(*) FROM dead_letters") == 0

        [letter] = await kafka.await_records(f"{probe.COMMANDS}.dlq", lambda r: True, timeout=30)
        assert json.loads(letter.value)["id"] == "poison"
        assert letter.header("dlq_reason") == "handler_failed"
        assert letter.header("dlq_attempts") == "3"
        assert letter.header("dlq_consumer") == "probe.commands"
        assert letter.header("dlq_topic") == settings.topic(probe.COMMANDS)
        assert letter.header("dlq_partition") == "0"
        assert letter.header("dlq_offset") == "0"
        assert "is poison" in (letter.header("dlq_error") or "")

        async def after_poison() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied WHERE counter = 'p'")

        await eventually(after_poison, lambda n: n == 1, what="the message behind the poison")
        stored = await list_dead_letters(await _conn(settings), "probe")
        assert [(d.reason, d.attempts, d.offset) for d in stored] == [("handler_failed", 3, 0)]


@pytest.mark.asyncio
async def test_a_transient_failure_is_retried_then_applied_once(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = probe.build(settings, port=0)
    before = _metrics()
    async with running(service):
        await kafka.publish(probe.COMMANDS, probe.command("flaky", "f", fail="2"))

        async def applied() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied WHERE counter = 'f'")

        await eventually(applied, lambda n: n >= 1)
        # Attempt 1 failed inside the batch, attempt 2 alone (a retry is scheduled), 3 succeeds.
        assert _metrics(before)["desk_messages_retried_total"] == 1
        assert await count(service.pool, "SELECT count(*) FROM dead_letters") == 0
        assert await applied() == 1
        # Each attempt asked to be told of its commit; only the one that committed was.
        assert probe.COMMITTED.count("flaky") == 1


@pytest.mark.asyncio
async def test_bad_bytes_go_straight_to_the_dead_letter_topic_and_the_consumer_goes_on(
    settings: Settings, kafka: KafkaProbe
) -> None:
    service = probe.build(settings, port=0)
    async with running(service):
        await kafka.publish(probe.COMMANDS, b"{not json", key="k")
        await kafka.publish(probe.COMMANDS, {"counter": "no-id"}, key="k")
        await kafka.publish(probe.EVENTS, b"\xff\xfe binary", key="k")
        await kafka.publish(
            probe.EVENTS,
            {
                "id": "4f7c1b2e-0000-4000-8000-000000000001",
                "source": "x",
                "type": "test.probe.counter_bumped.v1",
                "time": "2026-01-01T00:00:00Z",
                "streamid": "s",
                "streamversion": 1,
                "correlationid": "c",
                "data": {"counter": "missing amount"},
            },
        )
        await kafka.publish(probe.COMMANDS, probe.command("good", "g"), key="k")

        commands_dlq = await kafka.await_records(f"{probe.COMMANDS}.dlq", lambda r: True, count=2)
        events_dlq = await kafka.await_records(f"{probe.EVENTS}.dlq", lambda r: True, count=2)
        assert sorted(r.header("dlq_reason") or "" for r in commands_dlq) == [
            "schema_invalid",
            "undecodable",
        ]
        assert sorted(r.header("dlq_reason") or "" for r in events_dlq) == [
            "schema_invalid",
            "undecodable",
        ]
        assert all(r.header("dlq_attempts") == "1" for r in [*commands_dlq, *events_dlq])
        # Sealed as the probe's: what counts dead letters per service can tell them from forgeries.
        ring = KeyRing.from_settings(settings)
        assert {dead_letter_writer(ring, r) for r in [*commands_dlq, *events_dlq]} == {"probe"}

        async def good() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied WHERE counter = 'g'")

        await eventually(good, lambda n: n == 1, what="the valid command after the bad ones")
        assert (await service.readiness())["consumers"]


@pytest.mark.asyncio
async def test_a_record_of_a_type_the_consumer_does_not_handle_is_read_past_by_its_header(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """The ``ce_type`` header names a known type the consumer does not accept: it is skipped
    without parsing (even bytes that would be a dead letter); without the header it is parsed."""
    assert EVENTS.knows(TicketReceived.event_name)
    assert TicketReceived.event_name not in probe.Tally.accepts
    service = probe.build(settings, port=0)
    async with running(service):
        other = [("ce_type", TicketReceived.event_type().encode())]
        await kafka.publish(probe.EVENTS, b"{someone else's", key="k", headers=other)
        await kafka.publish(probe.EVENTS, b"{no header", key="k")
        dead = await kafka.await_records(f"{probe.EVENTS}.dlq", lambda r: True, count=1)
        assert [r.value for r in dead] == [b"{no header"]
        assert dead[0].header("dlq_reason") == "undecodable"


@pytest.mark.asyncio
async def test_a_replayed_dead_letter_is_applied_once_the_cause_is_gone(
    settings: Settings, kafka: KafkaProbe
) -> None:
    settings = settings.replace(consumer_max_attempts=3)
    service = probe.build(settings, port=0)
    async with running(service):
        # Fails 4 times: dead-lettered after 3 attempts, succeeds on the 2nd try after replay.
        await kafka.publish(probe.COMMANDS, probe.command("late", "l", fail="4"))
        conn = await _conn(settings)
        try:

            async def letters() -> int:
                return len(await list_dead_letters(conn, "probe"))

            await eventually(letters, lambda n: n == 1, what="dead letter")
            [letter] = await list_dead_letters(conn, "probe")
            await replay_dead_letter(conn, service.producer, letter)

            async def applied() -> int:
                return await count(conn, "SELECT count(*) FROM probe.applied WHERE counter = 'l'")

            await eventually(applied, lambda n: n == 1, what="replayed message applied")
            assert await list_dead_letters(conn, "probe") == []
            [replayed] = await list_dead_letters(conn, "probe", include_replayed=True)
            assert replayed.replayed_at is not None
        finally:
            await conn.close()


@pytest.mark.asyncio
async def test_a_consumer_killed_between_its_transaction_and_its_offset_commit(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    """SIGKILL right after the effects commit: the batch is redelivered and has no second effect."""
    await kafka.create(probe.COMMANDS, probe.EVENTS)
    for i in range(30):
        await kafka.publish(probe.COMMANDS, probe.command(f"k-{i}", f"c{i % 4}"), key=f"c{i % 4}")

    port = free_port()
    process = ServiceProcess(
        "tests.support.probe", settings, port, tmp_path / "probe.log", {"PROBE_PORT": str(port)}
    )
    process.start(DESK_CRASH_AT="consumer.after_transaction")
    assert await process.wait_exit(60) == -9, process.logs()[-2000:]

    conn = await _conn(settings)
    try:
        committed = await count(conn, "SELECT count(*) FROM probe.processed_messages")
        assert committed > 0, "the crash came after a committed transaction"

        process.start()
        await process.wait_ready()

        async def applied() -> int:
            return await count(conn, "SELECT count(DISTINCT message_id) FROM probe.applied")

        await eventually(applied, lambda n: n == 30, timeout=60, what="all 30 bumps applied")
        await kafka.all_records(probe.EVENTS)
        assert await count(conn, "SELECT count(*) FROM probe.applied") == 30
        assert await count(conn, "SELECT count(*) FROM probe.events") == 30
        assert await conn.fetchval("SELECT sum(total) FROM probe.tallies") == 30
        duplicates = (await _metrics_at(port)).get("desk_messages_duplicate_total", 0)
        assert duplicates > 0, "the redelivered batch was recognised and skipped"
    finally:
        await conn.close()
        await process.stop()


async def _conn(settings: Settings) -> Connection:
    return await connect(settings.require_database_url(), schema="probe")


def _metrics(since: dict[str, float] | None = None) -> dict[str, float]:
    """The probe's counters in this process, minus a snapshot taken earlier."""
    from prometheus_client import REGISTRY

    totals: dict[str, float] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            if sample.labels.get("service") == "probe" and sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    if since:
        totals = {k: v - since.get(k, 0.0) for k, v in totals.items()}
    return totals


async def _metrics_at(port: int) -> dict[str, float]:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or "{" not in line:
            continue
        name, _, rest = line.partition("{")
        value = float(rest.rsplit(" ", 1)[1])
        totals[name] = totals.get(name, 0.0) + value
    return totals


PHONE, EMAIL = "+8613800001234", "wang.fang@example.com"


@pytest.mark.asyncio
async def test_contact_data_in_a_decode_error_is_masked_in_the_dead_letter(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """pydantic puts the refused value in its message; the dead letter's error (row and
    ``dlq_error`` header) carries it masked. The record itself is kept as it was."""
    service = probe.build(settings, port=0)
    async with running(service):
        raw = probe.command("pii", amount=f"call {PHONE} or {EMAIL}")  # type: ignore[arg-type]
        await kafka.publish(probe.COMMANDS, raw)
        [letter] = await kafka.await_records(f"{probe.COMMANDS}.dlq", lambda r: True)
        [row] = await service.pool.fetch("SELECT error, value FROM dead_letters")
    for error in (letter.header("dlq_error") or "", row["error"]):
        assert PHONE not in error and EMAIL not in error, error
        assert "+86***34" in error and "w***@example.com" in error, error
    assert bytes(row["value"]) == letter.value == raw


@pytest.mark.slow
@pytest.mark.asyncio
async def test_contact_data_never_reaches_a_log_line(
    settings: Settings, kafka: KafkaProbe, tmp_path: Path
) -> None:
    await kafka.create(probe.COMMANDS, probe.EVENTS)
    port = free_port()
    log = tmp_path / "probe.log"
    process = ServiceProcess("tests.support.probe", settings, port, log, {"PROBE_PORT": str(port)})
    process.start()
    try:
        await process.wait_ready()
        raw = probe.command("pii", amount=f"call {PHONE} or {EMAIL}")  # type: ignore[arg-type]
        await kafka.publish(probe.COMMANDS, raw)
        await kafka.await_records(f"{probe.COMMANDS}.dlq", lambda r: True)
        await eventually(
            lambda: asyncio.to_thread(log.read_text),
            lambda text: "message dead-lettered" in text,
            what="the dead-letter log line",
        )
    finally:
        await process.stop()
    text = log.read_text()
    assert PHONE not in text and EMAIL not in text
    assert "+86***34" in text and "w***@example.com" in text


@pytest.mark.asyncio
async def test_processed_ids_are_purged_after_the_retention_and_the_table_stays_bounded(
    kafka: KafkaProbe,
) -> None:
    """Five rounds of 60 commands, 25 driven minutes apart, with a retention of one hour: the
    ids older than an hour are purged (in batches, by a supervised task), so the table holds
    at most the last three rounds; a redelivery within the retention is still recognised."""
    settings = kafka.settings.replace(
        clock="driven",
        processed_retention="1h",
        processed_purge_interval="100ms",
        token_max_ttl="1h",  # no credential may outlive the memory of the commands it carried
    )
    service = probe.build(settings, port=0, tally=False)
    start = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    per_round, rounds = 60, 5
    async with running(service):

        async def at(moment: datetime) -> None:
            async with service.pool.acquire() as conn, conn.transaction():
                await conn.execute("DELETE FROM desk_clock")
                await conn.execute("INSERT INTO desk_clock VALUES ($1)", moment)

        async def remembered() -> int:
            return await count(service.pool, "SELECT count(*) FROM processed_messages")

        peak = 0
        for n in range(rounds):
            await at(start + n * timedelta(minutes=25))
            # Within a purge interval the ids claimed over an hour (driven) ago are gone:
            # only the last two rounds are remembered.
            await eventually(
                remembered,
                lambda ids, n=n: ids <= per_round * min(n, 2),  # type: ignore[misc]
                what=f"ids older than the retention purged before round {n}",
            )
            for i in range(per_round):
                await kafka.publish(probe.COMMANDS, probe.command(f"r{n}-{i}", f"c{i}"))
            await eventually(
                lambda: count(service.pool, "SELECT count(*) FROM events"),
                lambda applied, n=n: applied == per_round * (n + 1),  # type: ignore[misc]
                what=f"round {n} applied",
            )
            peak = max(peak, await remembered())
        await kafka.publish(probe.COMMANDS, probe.command(f"r{rounds - 1}-0", "c0"))  # again
        await kafka.all_records(probe.COMMANDS)
        assert await count(service.pool, "SELECT count(*) FROM events") == per_round * rounds
        assert await remembered() <= per_round * 3
    assert peak <= per_round * 3


@pytest.mark.asyncio
async def test_a_dead_letter_over_the_brokers_limit_is_kept_whole_and_published_cut_to_fit(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """A record over the size consumers read is dead-lettered unread (too_large); the copy on
    the dead-letter topic is cut to what the broker takes (``dlq_truncated`` says from how
    much; its original headers, being small, are kept), the table keeps every byte, and the
    partition moves on."""
    service = probe.build(settings, port=0)
    big = b'{"id": "' + b"x" * (settings.kafka_max_message_bytes + 10) + b'"}'
    async with running(service):
        await kafka.publish(probe.COMMANDS, big, headers=[("x-origin", b"adapter-7")], partition=0)
        await kafka.publish(probe.COMMANDS, probe.command("behind-the-big-one", "b"), partition=0)
        await eventually(
            lambda: count(service.pool, "SELECT count(*) FROM applied WHERE counter = 'b'"),
            lambda n: n == 1,
            what="the message behind the big one",
        )
        [letter] = await kafka.await_records(f"{probe.COMMANDS}.dlq", lambda r: True)
        [row] = await service.pool.fetch(
            "SELECT reason, value, published_at FROM dead_letters WHERE consumer = 'probe.commands'"
        )
    assert row["reason"] == "too_large" and row["published_at"] is not None
    assert bytes(row["value"]) == big
    assert letter.header("dlq_reason") == "too_large"
    assert letter.header("dlq_truncated") == str(len(big))
    assert letter.header("x-origin") == "adapter-7", "small original headers are kept"
    assert big.startswith(letter.value) and len(letter.value) < settings.kafka_max_message_bytes


@pytest.mark.asyncio
async def test_a_missing_dead_letter_topic_loses_nothing_and_holds_nothing_up(
    make_settings: SettingsFactory,
) -> None:
    """Topic creation off and ``<topic>.dlq`` missing (on the embedded broker: a name it will
    not create on demand, as Kafka with auto.create.topics.enable=false): the dead letter is
    recorded in the consumer's transaction, the partition moves on, and publishing it is
    retried with backoff — counted, logged, visible — until the topic exists."""
    prefix = "d" * 220 + uuid4().hex[:11] + "."
    assert len(prefix + probe.COMMANDS + ".dlq") == 250  # one over Kafka's limit
    settings = make_settings(
        topic_prefix=prefix, kafka_create_topics=False, kafka_request_timeout_ms=1000
    )
    kafka = KafkaProbe(settings)
    try:
        await kafka.create(probe.COMMANDS, probe.EVENTS)
        service = probe.build(settings, port=0, tally=False)
        async with running(service):
            await kafka.publish(probe.COMMANDS, b"{not json", partition=0)
            await kafka.publish(probe.COMMANDS, probe.command("behind", "b"), partition=0)
            await eventually(
                lambda: count(service.pool, "SELECT count(*) FROM events"),
                lambda n: n == 1,
                what="the command behind the dead letter",
            )
            row = await eventually(
                lambda: service.pool.fetchrow(
                    "SELECT reason, published_at, publish_attempts, publish_error FROM dead_letters"
                ),
                lambda r: r is not None and r["publish_attempts"] >= 2,
                timeout=30,
                what="two failed attempts at publishing the dead letter",
            )
            unpublished = await eventually(
                lambda: _gauge("desk_dead_letters_unpublished", service="probe"),
                lambda n: n == 1,
            )
            assert all((await service.readiness()).values())
        assert row is not None
        assert (row["reason"], row["published_at"]) == ("undecodable", None)
        assert "UnknownTopicOrPartition" in row["publish_error"], row["publish_error"]
        assert unpublished == 1
    finally:
        await kafka.close()


async def _gauge(name: str, **labels: str) -> float | None:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels)


@pytest.mark.asyncio
async def test_a_fault_of_the_plumbing_itself_is_retried_a_bounded_number_of_times(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """A fault no message causes and no retry cures — PostgreSQL refusing every ordinary
    dead-letter row (a trigger stands in for a bug) — is retried ``consumer_max_attempts``
    times; then the record is dead-lettered as ``plumbing_failed`` and the partition moves on."""
    settings = settings.replace(consumer_max_attempts=3)
    service = probe.build(settings, port=0)
    async with running(service):
        owner = await connect(settings.require_database_url(), schema="probe")  # the service
        try:  # runs as a role that creates nothing
            await owner.execute(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.reason <> 'plumbing_failed' THEN RAISE EXCEPTION 'refused by a test'; "
                "END IF; RETURN NEW; END $$; "
                "CREATE TRIGGER refuse BEFORE INSERT ON dead_letters "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        finally:
            await owner.close()
        await kafka.publish(probe.COMMANDS, b"{not json", partition=0)
        await kafka.publish(probe.COMMANDS, probe.command("behind", "b"), partition=0)
        await eventually(
            lambda: count(service.pool, "SELECT count(*) FROM applied WHERE counter = 'b'"),
            lambda n: n == 1,
            timeout=60,
            what="the command behind the record the plumbing failed on",
        )
        [row] = await service.pool.fetch("SELECT reason, error, attempts FROM dead_letters")
    assert row["reason"] == "plumbing_failed"
    assert "refused by a test" in row["error"]
    assert row["attempts"] == 3


@pytest.mark.asyncio
async def test_a_header_that_is_not_text_loses_neither_its_record_nor_the_rest_of_the_poll(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """FastStream decodes every header of a poll as text: one record with a header of other
    bytes, or a null one, failed the poll before the handler, and the consumer went on past it
    — every record of that poll lost. Published before the service starts, so they come in one
    poll."""
    odd: dict[int, list[tuple[str, bytes | None]]] = {3: [("x-bad", b"\xff\xfe")], 6: [("x", None)]}
    for n in range(10):
        headers = odd.get(n, [("x-fine", b"yes")])
        await kafka.publish(
            probe.COMMANDS,
            probe.command(f"h-{n}", "h"),
            key="h",
            headers=headers,  # type: ignore[arg-type]  # a null value, as any client may send
            partition=0,
        )
    service = probe.build(settings, port=0)
    async with running(service):

        async def applied() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied WHERE counter = 'h'")

        await eventually(applied, lambda n: n == 10, what="all ten commands, odd headers too")
        assert (await service.readiness())["consumers"]


@pytest.mark.asyncio
async def test_a_dead_letters_own_dead_letter_is_kept_and_never_published(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """A reader of a ``.dlq`` topic that fails on a record: the row is kept, as one refused for
    good, and no ``.dlq.dlq`` topic is written (production creates none)."""
    await kafka.create(probe.COMMANDS, probe.EVENTS)
    service = probe.build(settings, port=0, tally=False)
    async with running(service):
        letter = Record(f"{settings.topic(probe.COMMANDS)}.dlq", 0, 7, b"k", b"{}", ())
        async with service.pool.acquire() as conn:
            await service.dead_letters.record(
                conn, letter, consumer="probe.dead-letters", reason="x", error="boom", attempts=5
            )
        await service.dead_letters.publish_due(service.pool)
        row = await service.pool.fetchrow(
            "SELECT published_at, publish_due, publish_attempts, publish_error FROM dead_letters"
        )
    assert row is not None
    assert dict(row) == {
        "published_at": None,
        "publish_due": None,
        "publish_attempts": 0,
        "publish_error": NOT_REPUBLISHED,
    }
    # Nothing was sent there (the embedded broker would have made the topic on the first send).
    with pytest.raises(TimeoutError, match="does not exist"):
        await kafka.records_so_far(f"{probe.COMMANDS}.dlq.dlq", timeout=2)


@pytest.mark.asyncio
async def test_a_handled_poll_is_not_kept_by_what_was_scheduled_while_handling_it(
    settings: Settings, kafka: KafkaProbe
) -> None:
    """Every timer made while a batch is handled keeps a copy of the context it was made in —
    asyncpg's idle-connection timer, five minutes after each release of a connection — and
    FastStream's context holds the message, and through it every record of the poll: polls
    handled long ago stayed in memory, most of the console's growth over a long soak. Handled
    in a context of its own, nothing of a poll outlives its handling."""
    service = probe.build(settings, port=0)
    async with running(service):
        for n in range(40):
            await kafka.publish(probe.COMMANDS, probe.command(f"id-{n}", f"c{n % 4}", 1), key="c")

        async def applied() -> int:
            return await count(service.pool, "SELECT count(*) FROM applied")

        await eventually(applied, lambda n: n == 40, what="every command applied")

        async def kept() -> int:
            gc.collect()
            return sum(
                1
                for o in gc.get_objects()
                if isinstance(o, ConsumerRecord) and o.topic.endswith(probe.COMMANDS)
            )

        # Once the consumer is done with its last poll; kept by a timer, they would stay
        # five minutes.
        await eventually(kept, lambda n: n == 0, timeout=5, what="no record of a handled poll")
