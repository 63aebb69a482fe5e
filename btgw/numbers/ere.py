"""Translate libphonenumber's regexes into POSIX extended regexes (ERE), exactly
or not at all.

Asterisk's ``REGEX("pattern" string)`` compiles with ``regcomp(REG_EXTENDED)``,
so a numbering plan's patterns must be rewritten: ``(?:`` becomes ``(``,
``\\d`` becomes ``[0-9]``.  The translator parses the small subset of Python
``re`` the metadata uses (digits, classes of digits and ranges, groups,
alternation, ``? * +`` and ``{n}``/``{n,m}``) into a tree and prints it again;
anything else (``.``, anchors, backreferences, lookarounds, lazy quantifiers,
other escapes) raises :class:`UntranslatableError` instead of being guessed at.

``\\d`` is read as ASCII 0-9 (Python's also takes other scripts' digits;
libphonenumber converts those before matching, and the dialplan filters dialled
numbers to 0-9 and + first).  Only membership is preserved: the patterns are
used anchored (``^(...)$``), where POSIX's leftmost-longest and Python's
leftmost-first matching accept the same strings.  Captures become plain groups; nothing reads them.

The output holds only ``0-9 [ ] ( ) | ? * + { } , -``: no backslash (pbx_config
eats one level of them), no quote (REGEX splits its argument on ``"``), no
``$`` or ``;``.  The same tree also lists a finite pattern's strings
(:func:`strings`), for prefixes and short codes the dialplan compares as text.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product
from typing import Final

RE_DUP_MAX: Final = 255
"""POSIX's guaranteed largest repeat count (glibc's RE_DUP_MAX is 0x7fff)."""

DIGITS: Final = frozenset("0123456789")


class UntranslatableError(ValueError):
    """The pattern uses something this translator cannot reproduce exactly."""


@dataclass(frozen=True)
class Chars:
    """A set of digits: one literal, ``\\d`` or a class."""

    digits: frozenset[str]


@dataclass(frozen=True)
class Repeat:
    node: Node
    low: int
    high: int | None  # None: unbounded


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Alt:
    options: tuple[Node, ...]


Node = Chars | Repeat | Seq | Alt


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.text = pattern
        self.pos = 0

    def fail(self, what: str) -> UntranslatableError:
        return UntranslatableError(f"{what} at offset {self.pos} of {self.text!r}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def parse(self) -> Node:
        node = self.alternation()
        if self.pos != len(self.text):
            raise self.fail(f"unexpected {self.peek()!r}")
        return node

    def alternation(self) -> Node:
        options = [self.sequence()]
        while self.peek() == "|":
            self.pos += 1
            options.append(self.sequence())
        return options[0] if len(options) == 1 else Alt(tuple(options))

    def sequence(self) -> Node:
        items: list[Node] = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.quantified(self.atom()))
        return items[0] if len(items) == 1 else Seq(tuple(items))

    def atom(self) -> Node:
        char = self.peek()
        self.pos += 1
        if char in DIGITS:
            return Chars(frozenset(char))
        if char == "\\":
            return Chars(self.escape())
        if char == "[":
            return self.char_class()
        if char == "(":
            if self.text.startswith("?:", self.pos):
                self.pos += 2
            elif self.peek() == "?":
                raise self.fail("a group extension other than (?:")
            node = self.alternation()
            if self.peek() != ")":
                raise self.fail("an unclosed group")
            self.pos += 1
            return node
        self.pos -= 1
        raise self.fail(f"{char!r} (only digits, classes, groups and quantifiers translate)")

    def escape(self) -> frozenset[str]:
        char = self.peek()
        self.pos += 1
        if char == "d":  # ASCII digits only: the metadata holds nothing else
            return DIGITS
        self.pos -= 2
        raise self.fail(f"the escape \\{char}")

    def char_class(self) -> Chars:
        if self.peek() == "^":
            raise self.fail("a negated class")
        digits: set[str] = set()
        while self.peek() != "]":
            char = self.peek()
            self.pos += 1
            if char == "\\":
                digits |= self.escape()
            elif char in DIGITS:
                if self.peek() == "-" and self.text[self.pos + 1 : self.pos + 2] in DIGITS:
                    end = self.text[self.pos + 1]
                    if end < char:
                        raise self.fail("a reversed range")
                    digits |= {str(d) for d in range(int(char), int(end) + 1)}
                    self.pos += 2
                else:
                    digits.add(char)
            else:
                self.pos -= 1
                raise self.fail(f"{char or 'end of pattern'!r} in a class")
        self.pos += 1
        if not digits:
            raise self.fail("an empty class")
        return Chars(frozenset(digits))

    def quantified(self, node: Node) -> Node:
        char = self.peek()
        if char in ("?", "*", "+"):
            self.pos += 1
            low, high = {"?": (0, 1), "*": (0, None), "+": (1, None)}[char]
        elif char == "{":
            low, high = self.braces()
        else:
            return node
        if self.peek() in ("?", "+", "*", "{"):
            raise self.fail("a lazy, possessive or stacked quantifier")
        return Repeat(node, low, high)

    def braces(self) -> tuple[int, int | None]:
        end = self.text.find("}", self.pos)
        if end < 0:
            raise self.fail("an unclosed {")
        body = self.text[self.pos + 1 : end]
        low_text, comma, high_text = body.partition(",")
        if not low_text.isdigit() or (high_text and not high_text.isdigit()):
            raise self.fail(f"the repeat {{{body}}}")  # {,m} means different things
        low = int(low_text)
        high = (int(high_text) if high_text else None) if comma else low
        if (high is not None and (high < low or high > RE_DUP_MAX)) or low > RE_DUP_MAX:
            raise self.fail(f"the repeat {{{body}}}")
        self.pos = end + 1
        return low, high


def parse(pattern: str) -> Node:
    """The tree of ``pattern``.  Raises UntranslatableError."""
    if not pattern:
        raise UntranslatableError("an empty pattern")
    return _Parser(pattern).parse()


def _class(digits: frozenset[str]) -> str:
    if len(digits) == 1:
        return next(iter(digits))
    ordered = sorted(int(d) for d in digits)
    runs: list[str] = []
    start = prev = ordered[0]
    for digit in [*ordered[1:], None]:
        if digit is not None and digit == prev + 1:
            prev = digit
            continue
        if prev - start >= 2:
            runs.append(f"{start}-{prev}")
        else:
            runs.append("".join(str(d) for d in range(start, prev + 1)))
        if digit is not None:
            start = prev = digit
    return "[" + "".join(runs) + "]"


def _print(node: Node, *, grouped: bool = False) -> str:
    if isinstance(node, Chars):
        return _class(node.digits)
    if isinstance(node, Seq):
        text = "".join(_print(item) for item in node.items)
        return f"({text})" if grouped else text
    if isinstance(node, Alt):
        return "(" + "|".join(_print(option) for option in node.options) + ")"
    inner = _print(node.node, grouped=True)
    if isinstance(node.node, Repeat):  # (x{2,4})? is not x{2,4}?
        inner = f"({inner})"
    if (node.low, node.high) == (0, 1):
        return inner + "?"
    if (node.low, node.high) == (0, None):
        return inner + "*"
    if (node.low, node.high) == (1, None):
        return inner + "+"
    if node.high == node.low:
        return f"{inner}{{{node.low}}}"
    return f"{inner}{{{node.low},{'' if node.high is None else node.high}}}"


def to_ere(pattern: str) -> str:
    """``pattern`` (Python re, metadata subset) as an equivalent POSIX ERE.

    >>> to_ere(r"(?:6\\d|7[1-48])\\d{7}")
    '(6[0-9]|7[1-48])[0-9]{7}'

    Raises:
        UntranslatableError: the pattern uses anything outside the subset.
    """
    return _print(parse(pattern))


def anchored(pattern: str) -> str:
    """``^(ERE)$``: the whole string must match, as libphonenumber's fullmatch."""
    return f"^({to_ere(pattern)})$"


MAX_STRINGS: Final = 200
"""A prefix or short-code pattern with more strings than this is not listed
as text (the dialplan would grow a line per string)."""


def strings(pattern: str) -> list[str]:
    """Every string ``pattern`` matches, longest first, for a finite language.

    >>> strings("08[58]|112")
    ['085', '088', '112']

    Raises:
        UntranslatableError: the language is infinite, too large, or the
            pattern is outside the subset.
    """
    return sorted(_strings(parse(pattern)), key=lambda s: (-len(s), s))


def _strings(node: Node) -> set[str]:
    if isinstance(node, Chars):
        return set(node.digits)
    if isinstance(node, Alt):
        out: set[str] = set()
        for option in node.options:
            out |= _strings(option)
        return _limit(out)
    if isinstance(node, Seq):
        acc = {""}
        for item in node.items:
            acc = _limit({a + b for a, b in product(acc, _strings(item))})
        return acc
    if node.high is None:
        raise UntranslatableError("an unbounded repeat has no finite list of strings")
    part = _strings(node.node)
    found: set[str] = set()
    level = {""}
    for count in range(node.high + 1):
        if count >= node.low:
            found |= level
        level = _limit({a + b for a, b in product(level, part)})
    return _limit(found)


def _limit(found: set[str]) -> set[str]:
    if len(found) > MAX_STRINGS:
        raise UntranslatableError(f"more than {MAX_STRINGS} strings")
    return found
