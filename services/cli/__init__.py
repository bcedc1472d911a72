"""``desk``: run servicedesk on this machine and operate it.

Commands are grouped by what an operator is doing: running the system (``up``, ``status``,
``migrate``, ``replay``), dealing with dead letters (``dlq``), and keeping the documentation in
step with the code (``config``, ``schemas``). Later groups add tickets, policy, SLA reports and
demo traffic. The commands are thin: the mechanisms live in ``shared/`` and the services.
"""

from __future__ import annotations

import typer
from pydantic import ValidationError

from services.cli import (
    acls,
    adapter,
    customers,
    demo,
    dlq,
    docs,
    master_keys,
    policy,
    run,
    sla,
    tickets,
    tokens,
    triage,
)

app = typer.Typer(
    name="desk",
    help="servicedesk: run the whole system locally and operate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
run.register(app)
app.add_typer(adapter.app, name="adapter")
app.add_typer(dlq.app, name="dlq")
app.add_typer(policy.app, name="policy")
app.add_typer(tickets.app, name="ticket")
app.add_typer(customers.app, name="customer")
app.add_typer(master_keys.app, name="master-key")
app.add_typer(sla.app, name="sla")
app.add_typer(triage.app, name="triage")
app.add_typer(tokens.app, name="token")
app.add_typer(tokens.keys_app, name="keys")
docs.register(app)
app.command()(demo.demo)
app.command()(acls.acls)


def main() -> None:
    """Run a command; a setting that fails validation is one clear message and exit status 2,
    not a traceback."""
    try:
        app()
    except ValidationError as error:
        for problem in error.errors(include_url=False, include_input=False):
            where = "".join(f"{part}: " for part in problem["loc"])
            said = problem["msg"].removeprefix("Value error, ")
            typer.echo(f"desk: configuration: {where}{said}", err=True)
        raise SystemExit(2) from None
