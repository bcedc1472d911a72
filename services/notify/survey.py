"""The survey link of a resolution notice: the console's survey page, with a token bound to the
one ticket.

notify's key vouches for customers (:mod:`shared.keys`); the token it signs names the ticket and
the commands a customer may send (:data:`~services.vocabulary.CUSTOMER_COMMANDS`), and expires
after ``DESK_TOKEN_MAX_TTL``. The console's page sends the customer's score with it, signed by
the customer's own token, so dispatch checks the customer as it checks any actor.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from services.vocabulary import CUSTOMER_COMMANDS
from shared.credentials import issue_token
from shared.keys import Key


class SurveyLinks:
    """What a customer notice's templates get for its ``survey_url``."""

    def __init__(self, console_url: str, key: Key | None, ttl: timedelta) -> None:
        self.console_url = console_url.rstrip("/")
        self.key = key
        self.ttl = ttl

    def context(self, number: str, now: datetime) -> dict[str, str]:
        """``console_url`` and ``token`` (empty without a key vouching for customers)."""
        token = ""
        if self.key is not None:
            token = issue_token(
                self.key,
                "customer",
                now=now,
                ttl=self.ttl,
                ticket=number,
                commands=CUSTOMER_COMMANDS,
            )
        return {"console_url": self.console_url, "token": token}
