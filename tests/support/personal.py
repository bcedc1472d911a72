"""Opening sealed personal fields in tests, as a service holding the master key would."""

from __future__ import annotations

from typing import Any

from shared.database import connect
from shared.keystore import KeyStore, MasterKey
from shared.personal import keys_for
from shared.settings import Settings


async def opened(settings: Settings, document: Any) -> Any:
    """``document`` (JSON data) with every sealed field replaced by its text (or "erased")."""
    conn = await connect(settings.require_database_url())
    try:
        keys = await keys_for(KeyStore(MasterKey.from_settings(settings)), conn, [document])
    finally:
        await conn.close()
    return keys.reveal_json(document)
