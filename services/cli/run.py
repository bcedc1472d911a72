"""Running the system: ``desk up``, ``desk status``, ``desk migrate``, ``desk replay``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from typing import Annotated

import typer
from rich.table import Table

from services import (
    build_service,
    desk_settings,
    key_issuers,
    port_of,
    service_migrations,
    service_names,
)
from services.cli.context import console, fail, load_settings, pick_services, run_async
from shared.database import connect
from shared.health import check_all
from shared.kafka import ensure_topics
from shared.keys import local_key_file
from shared.keystore import local_master_key
from shared.local.infrastructure import (
    Infrastructure,
    read_run_file,
    run_file,
    start_infrastructure,
    write_run_file,
)
from shared.local.ports import free_port
from shared.local.supervisor import Supervisor
from shared.logging import configure_logging
from shared.migrations import migrate as apply_migrations
from shared.privileges import provision
from shared.relay import ReplayRefused
from shared.relay import replay as replay_store
from shared.settings import Settings

ServicesOption = Annotated[
    list[str] | None, typer.Argument(help="Services (default: all).", show_default=False)
]


def register(app: typer.Typer) -> None:
    app.command()(up)
    app.command()(serve)
    app.command()(status)
    app.command()(migrate)
    app.command()(replay)


def up(  # noqa: PLR0917 - one parameter per option: typer reads them
    demo: Annotated[
        bool, typer.Option(help="Publish demo requests once everything is up.")
    ] = False,
    demo_rate: Annotated[float, typer.Option(help="Demo requests per second.")] = 2.0,
    raw_logs: Annotated[
        bool, typer.Option(help="Print the services' JSON log lines as is.")
    ] = False,
    only: Annotated[
        list[str] | None, typer.Option(help="Start only these services (repeatable).")
    ] = None,
    email: Annotated[
        bool, typer.Option(help="Run the email channel (desk adapter email) with intake.")
    ] = True,
    email_port: Annotated[
        int | None,
        typer.Option(
            help="SMTP port of the email adapter (default DESK_EMAIL_ADAPTER_PORT, else 2525 "
            "when free, else a free one).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start PostgreSQL, Kafka (embedded unless configured), every service and the email
    adapter; Ctrl-C stops all."""
    settings = desk_settings(local_mode=True)  # as every process it starts runs
    configure_logging("desk", log_format="console" if sys.stderr.isatty() else settings.log_format)
    names = pick_services(only)
    mail_port = _email_port(settings, email_port) if email and "intake" in names else None
    code = run_async(
        _up(settings, names, demo=demo, demo_rate=demo_rate, raw_logs=raw_logs, mail=mail_port)
    )
    raise typer.Exit(code)


def _email_port(settings: Settings, chosen: int | None) -> int:
    """The email adapter's port: as asked, as configured, else the default unless another
    program holds it (another `desk up`), then a free one."""
    if chosen is not None:
        return chosen
    port = settings.email_adapter_port  # type: ignore[attr-defined]
    assert isinstance(port, int)
    if "DESK_EMAIL_ADAPTER_PORT" in os.environ:
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        taken = probe.connect_ex((settings.email_adapter_host, port)) == 0  # type: ignore[attr-defined]
    return free_port() if taken else port


def _mail_configured() -> bool:
    return any(name in os.environ for name in ("DESK_SMTP_HOST", "DESK_SMTP_PORT"))


def _local_sinks(
    settings: Settings, infra: Infrastructure, names: list[str], sinks: contextlib.ExitStack
) -> list[str]:
    """Where notices go when nothing is configured: a local SMTP sink (``.desk/mail``) and a
    local SMS provider (``.desk/sms``), so a default run sends every notice somewhere that
    answers. Returns what to tell the operator."""
    from shared.local.sinks import http_receiver, smtp_server

    told: list[str] = []
    if "notify" not in names:
        return told
    if not _mail_configured():
        mailbox = settings.data_dir / "mail"
        mail = sinks.enter_context(smtp_server(mailbox=mailbox, keep=False))
        infra.extra_env["DESK_SMTP_HOST"] = "127.0.0.1"
        infra.extra_env["DESK_SMTP_PORT"] = str(mail.port)
        told.append(f"No SMTP server is configured: email notices land in {mailbox}/.")
    if "DESK_NOTIFY_SMS_ENDPOINT" not in os.environ:
        folder = settings.data_dir / "sms"
        sms = sinks.enter_context(http_receiver(folder=folder, keep=False))
        infra.extra_env["DESK_NOTIFY_SMS_ENDPOINT"] = sms.url("/sms")
        told.append(f"No SMS provider is configured: text messages land in {folder}/.")
    if "console" in names and "DESK_NOTIFY_CONSOLE_URL" not in os.environ:
        console = f"http://{settings.http_host}:{port_of(settings, 'console')}"
        infra.extra_env["DESK_NOTIFY_CONSOLE_URL"] = console
    return told


async def _up(
    settings: Settings,
    names: list[str],
    *,
    demo: bool,
    demo_rate: float,
    raw_logs: bool,
    mail: int | None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    started = time.monotonic()
    background: list[asyncio.Task[int]] = []
    infra = await start_infrastructure(settings, services=service_names())
    _local_mode(settings, infra)
    supervisor = Supervisor(raw_logs=raw_logs)
    sinks = contextlib.ExitStack()
    try:
        told = _local_sinks(settings, infra, names, sinks)
        os.environ.update(infra.environment())
        ready_settings = desk_settings()
        await _prepare(
            ready_settings,
            names,
            fresh_broker=infra.embedded_broker,
            roles=bool(infra.service_urls),
        )
        for name in names:
            argv = [sys.executable, "-m", f"services.{name}"]
            await supervisor.start(name, argv, infra.service_environment(name))
        if mail is not None:
            # The channel intake reads: it publishes with intake's environment.
            argv = [sys.executable, "-m", "services.cli", "adapter", "email"]
            env = {**infra.service_environment("intake"), "DESK_EMAIL_ADAPTER_PORT": str(mail)}
            await supervisor.start("email", argv, env)
            told.append(f"Mail to the desk: SMTP on 127.0.0.1:{mail} (desk adapter email).")

        def record() -> None:
            write_run_file(
                settings.data_dir,
                {
                    **infra.describe(),
                    "keys_file": ready_settings.keys_file,
                    "environments": {n: infra.service_environment(n) for n in names},
                    "desk_pid": os.getpid(),
                    "services": {n: c.pid for n, c in supervisor.children.items()},
                    "ports": _ports(ready_settings, names),
                    "email_adapter_port": mail,
                },
            )

        supervisor.on_change = record
        record()
        ready = await _await_ready(ready_settings, names, stop)
        if ready:
            _banner(ready_settings, names, time.monotonic() - started)
            for line in told:
                console.print(line)
            if demo:
                background.extend(_demo(ready_settings, demo_rate, stop))
        await stop.wait()
        console.print("[bold]stopping…[/]")
        return 0
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await supervisor.stop(settings.shutdown_grace.total_seconds())
        infra.stop()
        sinks.close()
        with contextlib.suppress(FileNotFoundError):
            run_file(settings.data_dir).unlink()
        console.print("[bold]stopped[/]: services, broker and database are down")


def _demo(settings: Settings, rate: float, stop: asyncio.Event) -> list[asyncio.Task[int]]:
    """Demo requests, and demo agents and customers working the tickets, until ``stop``."""
    from services.dispatch.demo import run_desk_work
    from services.intake.demo import run_demo

    console = f"http://{settings.http_host}:{port_of(settings, 'console')}"
    return [
        asyncio.create_task(run_demo(settings, rate=rate, stop=stop), name="demo requests"),
        asyncio.create_task(
            run_desk_work(settings, stop=stop, console_url=console), name="demo work"
        ),
    ]


def _local_mode(settings: Settings, infra: Infrastructure) -> None:
    """What `desk up` adds for every process: local mode, and local keys unless keys are
    configured (made once in the data directory, so tokens outlive a restart, and customers'
    data stays readable: the master key wraps every data key)."""
    infra.extra_env["DESK_LOCAL_MODE"] = "true"
    if settings.keys_file is None and settings.keys is None:
        keys = local_key_file(settings.data_dir / "keys.json", key_issuers())
        infra.extra_env["DESK_KEYS_FILE"] = str(keys.resolve())
    if settings.master_key_file is None and settings.master_key is None:
        master = local_master_key(settings.data_dir / "master.key")
        infra.extra_env["DESK_MASTER_KEY_FILE"] = str(master.resolve())


async def _prepare(
    settings: Settings, names: list[str], *, fresh_broker: bool, roles: bool
) -> None:
    """Topics, migrations as the owner (and each service's rights, when each has its own role)
    and — on a fresh in-memory broker — replay of every event store."""
    services = [build_service(n, settings) for n in names]
    topics = sorted({t for s in services for t in s.topics()})
    await ensure_topics(settings, topics)
    conn = await connect(settings.require_database_url())
    try:
        for name in names:
            if roles:
                await provision(conn, name, service_migrations(name))
            else:
                await apply_migrations(conn, name, service_migrations(name))
            if fresh_broker:
                count = await replay_store(conn, name, 0)
                if count:
                    console.print(f"replaying {count} {name} events onto the fresh broker")
    finally:
        await conn.close()


async def _await_ready(settings: Settings, names: list[str], stop: asyncio.Event) -> bool:
    deadline = time.monotonic() + 180
    while not stop.is_set() and time.monotonic() < deadline:
        statuses = await check_all(settings, _ports(settings, names), timeout=2)
        if all(s.up for s in statuses):
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
    if not stop.is_set():
        console.print("[yellow]not every service became ready; see the logs above[/]")
    return False


def _banner(settings: Settings, names: list[str], seconds: float) -> None:
    table = Table(title=f"servicedesk is up ({seconds:.1f}s)", show_header=True)
    table.add_column("component")
    table.add_column("address")
    table.add_row("postgres", (settings.database_url or "").split("@")[-1])
    table.add_row("kafka", settings.kafka_bootstrap_servers or "")
    for name in names:
        table.add_row(name, f"http://{settings.http_host}:{port_of(settings, name)}/ready")
    console.print(table)
    if "console" in names:
        url = f"http://{settings.http_host}:{port_of(settings, 'console')}/"
        console.print(f"[bold]console[/]: the dashboard at {url}")
        if link := _sign_in_link(settings, url):
            console.print(f"  the operator's sign-in link (click Sign in): {link}", soft_wrap=True)
        console.print("  an agent desk's token: `desk token issue AGENT_ID`")
    console.print("`desk status` in another terminal shows health; Ctrl-C stops everything.")


def _sign_in_link(settings: Settings, url: str) -> str | None:
    """A link that signs the policy's first operator in (local keys only: it holds a token)."""
    from datetime import UTC, datetime, timedelta

    from services.policy import policy_schedule
    from shared.credentials import issue_token
    from shared.keys import KeyRing

    operators = policy_schedule(settings).in_force(datetime.now(UTC)).policy.directory.operators
    key = KeyRing.from_settings(settings).issuer_of("agents")
    if not operators or key is None or not settings.local_mode:
        return None
    token = issue_token(key, operators[0].id, now=datetime.now(UTC), ttl=timedelta(hours=8))
    return f"{url}login#token={token}"


def _ports(settings: Settings, names: list[str]) -> dict[str, int]:
    return {name: port_of(settings, name) for name in names}


def serve(
    service: Annotated[str, typer.Argument(help="The service to run one more instance of.")],
    port: Annotated[
        int, typer.Option(help="Its HTTP port (default: a free one).", show_default=False)
    ] = 0,
) -> None:
    """Run one more instance of a service in the foreground, beside those `desk up` runs.

    It gets the environment `desk up` gives that service (from its run file: its database
    role, keys, the infrastructure; or the configured servers when nothing runs), joins its
    consumer groups and shares their work. The process becomes the service (same pid); Ctrl-C
    or SIGTERM stops it.
    """
    [name] = pick_services([service])
    settings = desk_settings()
    running = read_run_file(settings.data_dir)
    if running is not None and name not in running.get("environments", {}):
        raise fail(f"the running `desk up` does not run {name}")
    env = {**os.environ, **(running or {}).get("environments", {}).get(name, {})}
    if not env.get("DATABASE_URL") or not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        raise fail("DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS unknown and no `desk up` is running")
    chosen = port or free_port(settings.http_host)
    env[f"DESK_{name.upper()}_PORT"] = str(chosen)
    console.print(f"another {name} instance, on http://{settings.http_host}:{chosen}/ready")
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable, "-m", f"services.{name}"], env)


def status(
    services: ServicesOption = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each component.")] = 5.0,
) -> None:
    """Health of PostgreSQL, Kafka and each service; exits 1 if anything is down."""
    settings = load_settings()
    names = pick_services(services)
    statuses = run_async(check_all(settings, _ports(settings, names), timeout=timeout))
    table = Table(show_header=True)
    for column in ("component", "status", "address", "detail"):
        table.add_column(column)
    for s in statuses:
        state = "[green]up[/]" if s.up else "[bold red]down[/]"
        table.add_row(s.component, state, s.address, s.detail)
    console.print(table)
    raise typer.Exit(0 if all(s.up for s in statuses) else 1)


def migrate(services: ServicesOption = None) -> None:
    """As the owner role: apply database migrations (kernel and service) to each service's
    schema, and grant each service's own role its rights there."""
    settings = load_settings()
    if not settings.database_url:
        raise fail("DATABASE_URL is not set and no `desk up` is running")
    names = pick_services(services)

    async def go() -> dict[str, list[str]]:
        conn = await connect(settings.require_database_url())
        try:
            return {n: await provision(conn, n, service_migrations(n)) for n in names}
        finally:
            await conn.close()

    try:
        done = run_async(go())
    except LookupError as error:
        raise fail(str(error)) from None
    for name, applied in done.items():
        console.print(f"{name}: {', '.join(applied) if applied else 'up to date'}")


def replay(
    services: ServicesOption = None,
    from_position: Annotated[
        int | None,
        typer.Option(
            "--from",
            min=0,
            help="Republish events after this position of one service's store (default: all).",
            show_default=False,
        ),
    ] = None,
    skip_unpublished: Annotated[
        bool,
        typer.Option(
            help="Allow moving the relay forward past events it has not published yet "
            "(they are then never published)."
        ),
    ] = False,
) -> None:
    """Republish events from the store to Kafka (after a broker lost its data, for instance).

    Without ``--from`` every event of each store named (all by default) is published again. A
    position belongs to one store, so ``--from`` takes exactly one service; it never moves the
    relay past events it has not published unless ``--skip-unpublished`` says so.
    """
    settings = load_settings()
    if not settings.database_url:
        raise fail("DATABASE_URL is not set and no `desk up` is running")
    names = pick_services(services)
    if from_position is not None and len(names) != 1:
        raise fail(
            "--from is a position in one service's store: name exactly one service "
            f"(one of {', '.join(service_names())})"
        )
    position = from_position or 0

    async def go() -> dict[str, int]:
        conn = await connect(settings.require_database_url())
        try:
            return {
                n: await replay_store(conn, n, position, skip_unpublished=skip_unpublished)
                for n in names
            }
        finally:
            await conn.close()

    try:
        counts = run_async(go())
    except ReplayRefused as refused:
        raise fail(f"nothing replayed: {refused}") from None
    for name, count in counts.items():
        console.print(f"{name}: {count} events after position {position} queued for publishing")
