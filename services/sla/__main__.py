"""``python -m services.sla``: serve the sla service."""

from services.sla.app import build
from services.sla.settings import SlaSettings
from shared.service import serve

if __name__ == "__main__":
    serve("sla", build, SlaSettings)
