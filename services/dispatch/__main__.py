"""``python -m services.dispatch``: serve the dispatch service."""

from services.dispatch.app import build
from services.dispatch.settings import DispatchSettings
from shared.service import serve

if __name__ == "__main__":
    serve("dispatch", build, DispatchSettings)
