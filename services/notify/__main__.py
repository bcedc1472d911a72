"""``python -m services.notify``: serve the notify service."""

from services.notify.app import build
from services.notify.settings import NotifySettings
from shared.service import serve

if __name__ == "__main__":
    serve("notify", build, NotifySettings)
