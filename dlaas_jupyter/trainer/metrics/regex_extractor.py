"""FfDL's regex_extractor: typed records from a learner's log lines, as they arrive.

The algorithm is FfDL's, so manifests written for FfDL find the same records.
Per learner, a window holds the last ``line_lookahead`` lines, each ended by
"\\n" as in the log file. After each new line every group's regex (in name
order) is tried as a match anchored at the start of the window; the first
group that matches gives one record and empties the window. A consequence
worth knowing: a line no group matches at the window's start holds the window
until it slides out, and one-line records arriving meanwhile are found only
as the first line of a later window (the rest of that window is dropped with
the match). One-line regexes collect every record with ``line_lookahead: 1``,
or with a leading ``.*?`` (DOTALL) that skips such lines.

Where FfDL fell short:
- JSONSTRING values are typed JSONSTRING (FfDL sent INT).
- ``meta.time: $name`` dates the record from that group's text (ISO 8601,
  milliseconds or seconds since the epoch, or a glog stamp); FfDL ignored it.
- A value whose text is not of its declared type is sent as STRING with the
  text as found, so no data is lost and no reader is misled; the learner's log
  says so once per value. INT and FLOAT values are normalised
  (see spec.typed_text). A value whose regex group took no part in the
  match is left out of the record.
- Each match runs under a time limit (regex's ``timeout``, which counts the
  process's CPU time, all threads together), so a regex with catastrophic
  backtracking costs at most that limit per window start instead of hanging
  collection; the group is not tried again until the window start moves, and
  the log says so once per group. regex releases the GIL while it matches, so
  the Trainer's other threads keep running meanwhile.

Speed: a group is tried only on windows whose first line starts with its
regex's leading literal text and with a character its regex can start with
(read from the pattern, conservatively, so no match is ever skipped). That
check is made once per window start, so a line no group can match costs a
list append. The learner never waits for any of this: it writes its log to a
file that the collector tails in its own thread (see trainer/collect.py).
"""

from __future__ import annotations

import math
import re
import string
import threading
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import regex

from dlaas_jupyter.proto import trainer_pb2 as pb
from dlaas_jupyter.trainer.metrics.base import LogNote
from dlaas_jupyter.trainer.metrics.spec import GroupSpec, MetricsSpec, Template, typed_text

TYPE_NAMES = {number: name for name, number in pb.Any.DataType.items()}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Numbers from here up are milliseconds (1e11 s is the year 5138, 1e11 ms 1973).
_MS_THRESHOLD = 1e11
_GLOG = re.compile(r"[EFIW](\d\d)(\d\d)\s+(\d\d):(\d\d):(\d*)\.(\d+)")


def timestamp_ms(text: str) -> int | None:
    """Milliseconds since the epoch of a time as logs print it, or None.

    Accepts a number of milliseconds or seconds since the epoch (told apart by
    size), ISO 8601 (without an offset it is UTC), or a glog stamp such as
    ``I0220 10:11:12.123456`` (no year: the current one, UTC).
    """
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(number):
            return None
        return round(number if abs(number) >= _MS_THRESHOLD else number * 1000)
    stamp = _GLOG.fullmatch(text)
    try:
        if stamp:
            month, day, hour, minute, second, fraction = stamp.groups()
            when = datetime(
                datetime.now(UTC).year,
                int(month),
                int(day),
                int(hour),
                int(minute),
                int(second or 0),
                int(fraction[:6].ljust(6, "0")),
                tzinfo=UTC,
            )
        else:
            when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return (when - _EPOCH) // _MS


# What a match must start with, read from the pattern text so that windows no
# match can start at are passed over without running the regex. The reading
# is conservative: anything unusual (inline flags, backreferences, \p{..},
# fuzzy matching, ...) gives up, which costs speed, never a record. Character
# sets hold ASCII only; a window starting with any other character is tried.
_ASCII = frozenset(map(chr, range(128)))
_DIGIT = frozenset(string.digits)
_WORD = frozenset(string.ascii_letters + string.digits + "_")
_SPACE_SURE = frozenset(" \t\n\r\f\v")
_SPACE_MAYBE = _SPACE_SURE | frozenset("\x1c\x1d\x1e\x1f")
# escape letter -> (characters surely in the class, characters maybe in it)
_CLASS_ESCAPES = {
    "d": (_DIGIT, _DIGIT),
    "D": (_ASCII - _DIGIT, _ASCII - _DIGIT),
    "w": (_WORD, _WORD),
    "W": (_ASCII - _WORD, _ASCII - _WORD),
    "s": (_SPACE_SURE, _SPACE_MAYBE),
    "S": (_ASCII - _SPACE_MAYBE, _ASCII - _SPACE_SURE),
}
_CHAR_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "f": "\f", "v": "\v", "a": "\a"}
_ZERO_WIDTH_ESCAPES = frozenset("bBAZ")
_INLINE_FLAGS = re.compile(r"\(\?[-aiLmsuxberfpwV^]")
_REPEAT = re.compile(r"\{(\d*)(?:,(\d*))?\}")


class _Opaque(Exception):
    """The pattern uses something the reading does not follow."""


@dataclass(frozen=True)
class Lead:
    """What every match of a pattern at the start of a text begins with."""

    prefix: str  # literal text
    first: frozenset[str] | None  # the ASCII characters it can start with; None: any


@dataclass
class _Item:
    first: frozenset[str]  # ASCII characters it can start with
    nullable: bool  # can match empty
    char: str | None = None  # the one literal character it is, if so
    zero_width: bool = False


def lead(pattern: str) -> Lead:
    """The Lead of a pattern compiled with spec.FLAGS (conservative, never wrong)."""
    if _INLINE_FLAGS.search(pattern):
        return Lead("", None)
    reader = _Reader(pattern)
    try:
        alternatives = reader.alternation(top=True)
        if reader.pos != len(pattern):
            raise _Opaque
    except _Opaque:
        return Lead("", None)
    item = _union(alternatives)
    first = None if item.nullable or item.first >= _ASCII else item.first
    # Cut at a newline, so the prefix can be checked against the window's first line.
    prefix = reader.prefix.partition("\n")[0] if len(alternatives) == 1 else ""
    return Lead(prefix, first)


def _union(items: list[_Item]) -> _Item:
    return _Item(
        first=frozenset().union(*(item.first for item in items)),
        nullable=any(item.nullable for item in items),
    )


class _Reader:
    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.pos = 0
        self.prefix = ""

    def peek(self, ahead: int = 0) -> str:
        return self.pattern[self.pos + ahead : self.pos + ahead + 1]

    def alternation(self, top: bool = False) -> list[_Item]:
        alternatives = [self.sequence(top)]
        while self.peek() == "|":
            self.pos += 1
            alternatives.append(self.sequence(top=False))
        return alternatives

    def sequence(self, top: bool) -> _Item:
        first: set[str] = set()
        nullable = True
        literal = top  # still reading the top level's leading literal text
        while self.peek() not in ("", "|", ")"):
            item = self.item()
            if literal and not item.zero_width:
                if item.char is None:
                    literal = False
                else:
                    self.prefix += item.char
            if nullable:
                first |= item.first
                nullable = item.nullable
        return _Item(frozenset(first), nullable)

    def item(self) -> _Item:
        atom = self.atom()
        quantifier = self.peek()
        if quantifier in ("*", "+", "?"):
            self.pos += 1
            least = 1 if quantifier == "+" else 0
        elif quantifier == "{":
            repeat = _REPEAT.match(self.pattern, self.pos)
            if repeat is None:  # a literal brace or fuzzy matching
                raise _Opaque
            self.pos = repeat.end()
            least = int(repeat[1] or 0)
        else:
            return atom
        if self.peek() in ("?", "+"):
            self.pos += 1
        if atom.zero_width:
            raise _Opaque
        return _Item(atom.first, atom.nullable or least == 0)

    def atom(self) -> _Item:
        char = self.peek()
        self.pos += 1
        if char == "(":
            return self.group()
        if char == "[":
            return _Item(self.char_set(), False)
        if char == ".":
            return _Item(_ASCII, False)
        if char in ("^", "$"):
            return _Item(frozenset(), True, zero_width=True)
        if char == "\\":
            escaped = self.peek()
            self.pos += 1
            if escaped in _CLASS_ESCAPES:
                return _Item(_CLASS_ESCAPES[escaped][1], False)
            if escaped in _ZERO_WIDTH_ESCAPES:
                return _Item(frozenset(), True, zero_width=True)
            char = self.escaped_char(escaped)
        elif char in ("*", "+", "?", "{"):
            raise _Opaque
        return _Item(frozenset(char) & _ASCII, False, char=char)

    def escaped_char(self, escaped: str) -> str:
        if escaped in _CHAR_ESCAPES:
            return _CHAR_ESCAPES[escaped]
        if escaped == "x" and re.fullmatch(
            r"[0-9A-Fa-f]{2}", self.pattern[self.pos : self.pos + 2]
        ):
            self.pos += 2
            return chr(int(self.pattern[self.pos - 2 : self.pos], 16))
        if escaped == "" or escaped.isalnum():
            raise _Opaque
        return escaped

    def group(self) -> _Item:
        zero_width = False
        if self.peek() == "?":
            kind = self.pattern[self.pos + 1 : self.pos + 3]
            if kind[:1] in (":", ">", "|"):
                self.pos += 2
            elif kind[:1] in ("=", "!") or kind in ("<=", "<!"):
                self.pos += 1 + (2 if kind[:1] == "<" else 1)
                zero_width = True
            elif kind[:1] == "#":
                end = self.pattern.find(")", self.pos)
                if end < 0:
                    raise _Opaque
                self.pos = end + 1
                return _Item(frozenset(), True, zero_width=True)
            elif kind in ("P<",) or (kind[:1] == "<"):
                end = self.pattern.find(">", self.pos)
                if end < 0:
                    raise _Opaque
                self.pos = end + 1
            else:
                raise _Opaque
        inner = _union(self.alternation())
        if self.peek() != ")":
            raise _Opaque
        self.pos += 1
        if zero_width:
            return _Item(frozenset(), True, zero_width=True)
        return inner

    def char_set(self) -> frozenset[str]:
        """The ASCII characters a [...] set (just opened) may match."""
        sure: set[str] = set()
        maybe: set[str] = set()
        negated = self.peek() == "^"
        if negated:
            self.pos += 1
        start = True
        while True:
            char = self.peek()
            if char == "":
                raise _Opaque
            self.pos += 1
            if char == "]" and not start:
                break
            start = False
            if char == "[":
                raise _Opaque  # POSIX classes and set operations
            if char == "\\":
                escaped = self.peek()
                self.pos += 1
                if escaped in _CLASS_ESCAPES:
                    sure |= _CLASS_ESCAPES[escaped][0]
                    maybe |= _CLASS_ESCAPES[escaped][1]
                    continue
                char = "\b" if escaped == "b" else self.escaped_char(escaped)
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.pos += 1
                end = self.peek()
                self.pos += 1
                if end == "\\":
                    end = self.peek()
                    self.pos += 1
                    if end in _CLASS_ESCAPES:
                        raise _Opaque
                    end = self.escaped_char(end)
                if end == "[":
                    raise _Opaque
                members = {chr(code) for code in range(ord(char), min(ord(end), 127) + 1)}
            else:
                members = {char}
            sure |= members
            maybe |= members
        if negated:
            return _ASCII - sure
        return frozenset(maybe) & _ASCII


@dataclass(frozen=True, eq=False, slots=True)
class _Group:
    """A GroupSpec ready for the hot loop."""

    spec: GroupSpec
    match: Callable[..., regex.Match[str] | None]  # the compiled pattern's, bound
    prefix: str


class _Window:
    __slots__ = ("candidates", "lines")

    def __init__(self) -> None:
        self.lines: list[str] = []
        # Groups worth trying at the current window start: its first line
        # fits their Lead, and they have not timed out on it.
        self.candidates: Sequence[_Group] = ()


class RegexExtractor:
    """Records from log lines, per the regex groups of a regex_extractor spec."""

    def __init__(self, spec: MetricsSpec, note: LogNote, *, match_timeout: float = 0.05) -> None:
        if spec.kind != "regex" or not spec.groups:
            raise ValueError(
                f"RegexExtractor needs a regex_extractor spec with groups, not {spec.kind!r}"
            )
        self._note = note
        self._timeout = match_timeout
        self._lookahead = spec.line_lookahead
        leads = [lead(group.pattern.pattern) for group in spec.groups]
        self._groups = tuple(
            _Group(spec=group, match=group.pattern.match, prefix=lead_.prefix)
            for group, lead_ in zip(spec.groups, leads, strict=True)
        )
        # For each ASCII character: the groups a window starting with it may
        # match, and whether a longer prefix than that character is to check.
        self._by_first: dict[str, tuple[tuple[_Group, ...], bool]] = {}
        for char in _ASCII:
            groups = tuple(
                group
                for group, lead_ in zip(self._groups, leads, strict=True)
                if lead_.first is None or char in lead_.first
            )
            self._by_first[char] = (groups, any(len(group.prefix) > 1 for group in groups))
        self._other_first = (self._groups, any(group.prefix for group in self._groups))
        self._windows: dict[str, _Window] = {}
        self._noted: set[tuple[str, str]] = set()
        self._noted_lock = threading.Lock()

    def feed(self, subid: str, lines: list[str]) -> list[pb.EMetrics]:
        """Records completed by these new lines of learner ``subid``, in log order.

        Each learner's collector thread may feed its own lines concurrently.
        """
        window = self._windows.setdefault(subid, _Window())
        held = window.lines
        candidates = window.candidates
        lookahead = self._lookahead
        timeout = self._timeout
        records: list[pb.EMetrics] = []
        for line in lines:
            held.append(line)
            if len(held) > lookahead:
                del held[0]
                candidates = self._candidates(held[0])
            elif len(held) == 1:
                candidates = self._candidates(line)
            if not candidates:
                continue
            text = line + "\n" if len(held) == 1 else "\n".join(held) + "\n"
            for group in candidates:
                try:
                    # match(string, pos, endpos, concurrent, partial, timeout):
                    # regex parses positional arguments faster than keywords.
                    found = group.match(text, None, None, None, False, timeout)
                except TimeoutError:
                    self._timed_out(subid, group)
                    candidates = [other for other in candidates if other is not group]
                    continue
                if found is not None:
                    records.append(self._record(group, found, subid))
                    held.clear()
                    break
        window.candidates = candidates
        return records

    def _candidates(self, first_line: str) -> Sequence[_Group]:
        groups, check = self._by_first.get(first_line[:1] or "\n", self._other_first)
        if not check:
            return groups
        return [group for group in groups if first_line.startswith(group.prefix)]

    def _record(self, group: _Group, found: regex.Match[str], subid: str) -> pb.EMetrics:
        # Setting fields one by one is the quickest way to build a message here
        # (about a third faster than nested dicts as constructor arguments).
        spec = group.spec
        record = pb.EMetrics(grouplabel=spec.name)
        meta = record.meta
        meta.subid = subid
        if spec.subid is not None:
            meta.subid = (
                spec.subid.literal if spec.subid.ref is None else (found[spec.subid.ref] or subid)
            )
        if spec.time_ref is not None:
            text = found[spec.time_ref]
            time = None if text is None else timestamp_ms(text)
            if time is not None:
                meta.time = time
            elif text is not None:
                self._once(
                    subid,
                    spec.name,
                    "meta.time",
                    f"dlaas: evaluation-metrics group '{spec.name}': meta.time ${spec.time_ref} "
                    f"is {text!r}, not a timestamp; its records get the collection time",
                )
        self._fill(record.values, spec.values, found, subid, spec.name, "values")
        if spec.etimes:
            self._fill(record.etimes, spec.etimes, found, subid, spec.name, "etimes")
        return record

    def _fill(
        self,
        out: MutableMapping[str, pb.Any],
        templates: tuple[tuple[str, Template], ...],
        found: regex.Match[str],
        subid: str,
        group: str,
        field: str,
    ) -> None:
        for key, template in templates:
            type_, value = template.type, template.literal
            if template.ref is not None:
                text = found[template.ref]
                if text is None:
                    continue
                typed = typed_text(type_, text)
                if typed is None:
                    self._once(
                        subid,
                        group,
                        f"{field}.{key}",
                        f"dlaas: evaluation-metrics group '{group}': {field}.{key} should be "
                        f"{TYPE_NAMES[type_]} but the log has {text!r}; sent as STRING",
                    )
                    type_, typed = pb.Any.STRING, text
                value = typed
            entry = out[key]
            entry.type = type_
            entry.value = value

    def _timed_out(self, subid: str, group: _Group) -> None:
        self._once(
            subid,
            group.spec.name,
            "timeout",
            f"dlaas: evaluation-metrics regex of group '{group.spec.name}' took longer than "
            f"{round(self._timeout * 1000, 3):g} ms on a line and was skipped",
        )

    def _once(self, subid: str, group: str, what: str, message: str) -> None:
        """Tell the user once per job, however often it happens."""
        with self._noted_lock:
            if (group, what) in self._noted:
                return
            self._noted.add((group, what))
        self._note(subid, message)
