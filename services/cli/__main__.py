"""``python -m services.cli``: ``desk``, for processes ``desk up`` starts (the email adapter)."""

from services.cli import main

if __name__ == "__main__":
    main()
