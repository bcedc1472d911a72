"""Forgetting processed message ids after ``processed_retention``.

Every consumer claims each message id in ``processed_messages`` (``shared/consumer.py``), so the
table grows with the traffic. A supervised task of each service deletes the claims older than
the retention, every ``processed_purge_interval``, in batches (short transactions, no long lock
on a busy table). The retention must outlast any redelivery — Kafka's own retention of the
topics and of the groups' offsets: a message redelivered after its id was forgotten would be
applied a second time.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from shared.database import Connection
from shared.logging import get_logger
from shared.metrics import PROCESSED_PURGED

if TYPE_CHECKING:
    from shared.service import Service

log = get_logger(__name__)

PURGE_BATCH = 5000
"""Ids deleted per transaction."""


async def purge_processed(service: Service) -> None:
    """Delete the claims older than the retention, by the service's clock (the service runs this
    every ``processed_purge_interval``)."""
    async with service.pool.acquire() as conn:
        cutoff = await service.clock.now(conn) - service.settings.processed_retention
        purged = await forget_processed(conn, cutoff)
    if purged:
        PROCESSED_PURGED.labels(service.name).inc(purged)
        log.info("processed message ids purged", purged=purged, older_than=cutoff.isoformat())


async def forget_processed(conn: Connection, before: datetime) -> int:
    """Delete the claims made before ``before``, ``PURGE_BATCH`` a statement; return how many."""
    purged = 0
    while True:
        deleted: int = await conn.fetchval(
            "WITH gone AS (DELETE FROM processed_messages WHERE ctid = ANY(ARRAY("
            "SELECT ctid FROM processed_messages WHERE processed_at < $1 LIMIT $2 "
            "FOR UPDATE SKIP LOCKED)) RETURNING 1) SELECT count(*) FROM gone",
            before,
            PURGE_BATCH,
        )
        purged += deleted
        if deleted < PURGE_BATCH:
            return purged
