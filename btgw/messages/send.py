"""Sending SMS through chan_mobile: what can be sent, and in how many parts.

chan_mobile sends in text mode (``AT+CMGF=1``) with the phone's default
character set, one ``AT+CMGS`` per ``MobileSendSMS``, at most 160
characters, and no concatenation headers.  So btgw accepts only the GSM
7-bit default alphabet (what every phone sends unchanged in text mode) and
splits a longer text into separate messages, each marked ``(i/n)``.
Anything else is refused with the character named: better than a phone
turning "ñ" into "?" silently.
"""

from __future__ import annotations

import re
from typing import Final

SMS_LIMIT: Final = 160
"""chan_mobile's limit for one MobileSendSMS (docs/domain/chan_mobile.md)."""

MAX_PARTS: Final = 9
"""A longer text is refused: nine SMS is already a letter, and each part is
charged."""

# The GSM 03.38 default alphabet (without the escape-table characters, which
# count double and which phones in text mode handle inconsistently).
_GSM7: Final = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_NUMBER: Final = re.compile(r"^\+?[0-9]{3,20}$")


class SmsTextError(ValueError):
    """A text or number chan_mobile cannot send as given."""


def check_number(number: str) -> str:
    """The destination, digits with an optional leading ``+``.

    Raises:
        SmsTextError: anything else (it reaches an AT command).
    """
    if not _NUMBER.match(number):
        raise SmsTextError(f"{number!r} is not a phone number (digits, optional leading +)")
    return number


def split_text(text: str, limit: int = SMS_LIMIT) -> list[str]:
    """The SMS to send for ``text``: one if it fits, else parts of at most
    ``limit`` characters each prefixed ``(i/n) ``, split at spaces when one
    is near.

    >>> split_text("hello")
    ['hello']
    >>> [len(p) for p in split_text("x" * 400)]
    [160, 160, 98]
    >>> try:
    ...     split_text("5 €")
    ... except SmsTextError as exc:
    ...     print(str(exc)[:40])
    '€' is outside the GSM alphabet that cha

    Raises:
        SmsTextError: empty, a character outside the GSM 7-bit alphabet, or
            more than :data:`MAX_PARTS` parts.
    """
    if not text.strip():
        raise SmsTextError("the text is empty")
    for ch in text:
        if ch not in _GSM7:
            raise SmsTextError(
                f"{ch!r} is outside the GSM alphabet that chan_mobile sends in text mode"
                "; write it without (EUR for €, no emoji)"
            )
    if len(text) <= limit:
        return [text]
    body = limit - len("(9/9) ")
    parts: list[str] = []
    rest = text
    while rest:
        cut = body if len(rest) > body else len(rest)
        space = rest.rfind(" ", body // 2, cut) if len(rest) > body else -1
        if space > 0:
            cut = space + 1
        parts.append(rest[:cut])
        rest = rest[cut:]
    if len(parts) > MAX_PARTS:
        raise SmsTextError(f"the text needs {len(parts)} SMS; at most {MAX_PARTS} are sent")
    return [f"({i}/{len(parts)}) {p}" for i, p in enumerate(parts, start=1)]
