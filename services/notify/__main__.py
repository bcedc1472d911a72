"""``python -m services.notify``: serve the notify service."""

from services.notify.app import build
from shared.service import serve

if __name__ == "__main__":
    serve("notify", build)
