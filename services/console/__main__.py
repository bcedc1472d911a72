"""``python -m services.console``: serve the console service."""

from services.console.app import build
from services.console.settings import ConsoleSettings
from shared.service import serve

if __name__ == "__main__":
    serve("console", build, ConsoleSettings)
