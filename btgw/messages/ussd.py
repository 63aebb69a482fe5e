"""USSD (``*111#``-style codes) through chan_mobile, answer read from its log.

``mobile cusd <device> <code>`` sends ``AT+CUSD=1,"<code>",15`` and returns
at once; chan_mobile writes the network's answer only as a verbose log line,
``[<device>] CUSD response: <text>`` (seen on Asterisk 22.10 with Debian
sid's chan_mobile; not over AMI).  So btgw notes where the Asterisk log file
ends, sends the command, and reads the file from there until the line for
that device appears or the timeout passes.  The log file must carry
verbose messages (logger.conf: ``messages => notice,warning,error,verbose``).
"""

from __future__ import annotations

import re
from typing import Final

CODE_RE: Final = re.compile(r"^[0-9*#]{2,40}$")


class UssdCodeError(ValueError):
    """Not a USSD code."""


def check_code(code: str) -> str:
    """A USSD code: digits, ``*`` and ``#`` only (it reaches an AT command
    through a CLI line).

    >>> check_code("*111#")
    '*111#'

    Raises:
        UssdCodeError: anything else.
    """
    if not CODE_RE.match(code):
        raise UssdCodeError(f"{code!r} is not a USSD code (digits, * and #, like *111#)")
    return code


def find_answer(log_text: str, device: str) -> str | None:
    """The network's answer in log lines written after the request, or None.

    >>> find_answer("x\\n[..] VERBOSE[1] chan_mobile.c: [pixel] CUSD response: Saldo 5", "pixel")
    'Saldo 5'
    """
    marker = f"[{device}] CUSD response: "
    for line in log_text.splitlines():
        at = line.find(marker)
        if at >= 0:
            return line[at + len(marker) :].strip()
    return None
