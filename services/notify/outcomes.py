"""Recording what became of a notice (sent or failed) on its own stream, recipient masked."""

from __future__ import annotations

from typing import Protocol

from services.notify.channels import mask
from services.notify.events import NoticeEvent
from shared.eventstore import ANY_VERSION
from shared.personal import for_subject
from shared.unit_of_work import Cause, UnitOfWork


class NoticeLike(Protocol):
    """A notice as decided (:class:`~services.notify.rules.Notice`) or as stored
    (:class:`~services.notify.storage.Delivery`)."""

    @property
    def notice_key(self) -> str: ...
    @property
    def ticket_id(self) -> str: ...
    @property
    def number(self) -> str: ...
    @property
    def cause_event_id(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def channel(self) -> str | None: ...
    @property
    def address(self) -> str | None: ...
    @property
    def template(self) -> str: ...
    @property
    def language(self) -> str: ...


def record_outcome(
    uow: UnitOfWork,
    kind: type[NoticeEvent],
    notice: NoticeLike,
    *,
    attempts: int,
    policy_version: str,
    sealed_for: str | None = None,
    **detail: str,
) -> None:
    """Record ``kind`` for ``notice``; with ``sealed_for`` (the ticket's customer), its personal
    fields are sealed for them as it is appended."""
    record = uow.caused_by(Cause(notice.ticket_id, notice.cause_event_id))
    event = kind(
        notice_key=notice.notice_key,
        ticket_id=notice.ticket_id,
        number=notice.number,
        cause_event_id=notice.cause_event_id,
        recipient=notice.recipient,
        channel=notice.channel,
        address=mask(notice.channel, notice.address),
        template=notice.template,
        language=notice.language,
        attempts=attempts,
        policy_version=policy_version,
        **detail,
    )
    record(
        f"notice-{notice.notice_key}",
        [event if sealed_for is None else for_subject(event, sealed_for)],
        expected_version=ANY_VERSION,
        subject=notice.ticket_id,
    )
