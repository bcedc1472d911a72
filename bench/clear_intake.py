"""intake with its customers' personal fields left in clear: what ``bench.intake --clear`` runs
to measure what sealing costs on the same tree (issue 17 asks for it before and after).

The same service, but no key store is consulted and no field is sealed, as before sealing:
requests are read, triaged, numbered, recorded and published exactly as by
``python -m services.intake``. Never a way to run intake: the service refuses a clear field
(``sealed_only``), which this runner turns off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from services.intake import app, follow_ups, handlers
from services.intake.contract import Customer, Request
from services.intake.customers import Customers, M, SealedTexts
from services.intake.events import AttachmentRef
from services.intake.settings import IntakeSettings
from shared.database import Connection
from shared.keystore import KeyStore
from shared.service import Service, serve


class ClearCustomers(Customers):
    """Customers without keys: every text stays as the customer sent it."""

    def __init__(self) -> None:
        super().__init__({})

    @classmethod
    async def of(
        cls, store: KeyStore, conn: Connection, customers: Iterable[Customer]
    ) -> ClearCustomers:
        return cls()

    def ref(self, customer: Customer) -> str:
        return ""

    def seal(self, customer: Customer, event: M) -> M:
        return event

    def sealed(self, request: Request) -> SealedTexts:
        customer = request.customer
        return SealedTexts(
            ref="",
            name=customer.name,
            email=customer.email,
            phone=customer.phone,
            customer_id=customer.customer_id,
            subject=request.subject,
            description=request.description,
            attachments=[
                AttachmentRef(name=a.name, size=a.size, content_type=a.content_type, url=a.url)
                for a in request.attachments
            ],
        )


def _service(*args: Any, **options: Any) -> Service:
    return Service(*args, **{**options, "sealed_only": False})


if __name__ == "__main__":
    # The names intake's modules look up when a batch comes in, replaced before any does.
    for module in (handlers, follow_ups):
        vars(module)["Customers"] = ClearCustomers
    vars(app)["Service"] = _service
    serve("intake", app.build, IntakeSettings)
