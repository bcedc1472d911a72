"""A recorder for tests of pure domain code: what the desk or the timekeeper recorded, in order."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.events import EventData


@dataclass
class Recorded:
    """A :class:`~shared.unit_of_work.Recorder` keeping (stream id, events, expected version)."""

    records: list[tuple[str, list[EventData], int | None]] = field(default_factory=list)

    def __call__(self, stream_id: str, events: Sequence[EventData], **where: Any) -> None:
        self.records.append((stream_id, list(events), where["expected_version"]))

    def events(self, kind: type[EventData] | None = None) -> list[Any]:
        found = [e for _, events, _ in self.records for e in events]
        return [e for e in found if kind is None or isinstance(e, kind)]
