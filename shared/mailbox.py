"""E-mail addresses mail can be sent to as written.

An SMTP client reparses the address it is given for ``RCPT TO`` (aiosmtplib through
``email.utils``): ``ceo;x@a.bc`` becomes the local mailbox ``<ceo>`` of the desk's own relay,
``x<y@example.com`` becomes ``<y@example.com>``. So an address anyone gives — a customer's, an
agent's in the policy, the sender's — is taken only as a dot-atom (letters of any script,
digits and the specials RFC 5322 allows unquoted) at a dotted domain, which reads the same to
every parser; anything else is refused where it comes in, not mailed somewhere nobody wrote.
"""

from __future__ import annotations

import re

_ATOM = r"[\w!#$%&'*+/=?^`{|}~-]+"
_MAILBOX = re.compile(rf"^(?=[^@]{{1,64}}@){_ATOM}(?:\.{_ATOM})*@(?:[\w-]+\.)+[\w-]{{2,}}$")
MAX_ADDRESS = 254


def is_mailbox(address: str) -> bool:
    """Whether ``address`` is one mail can be sent to as written."""
    return len(address) <= MAX_ADDRESS and _MAILBOX.match(address) is not None
