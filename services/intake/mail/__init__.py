"""The email channel: ``desk adapter email``, an SMTP receiver turning mail into requests.

:mod:`.rules` holds what decides (is this an automatic message, which ticket does it answer),
:mod:`.reading` turns a mail's bytes into the ``requests.incoming`` contract, and
:mod:`.adapter` receives mail over SMTP and publishes what it read, like every channel adapter.
"""
