"""Reading Postfix's delivery log: one record per delivery attempt of one recipient.

Postfix 3.7 writes its own ``maillog_file`` as ``Mon DD HH:MM:SS host
syslog_name/process[pid]: text``; rsyslog writes the same lines with an ISO-8601
stamp (``2026-11-30T12:00:01.123456+00:00 host ...``). Both are read. A delivery
agent logs each recipient it tried as::

    QUEUEID: to=<rcpt>, [orig_to=<...>, ]relay=RELAY, [conn_use=N, ]delay=D,
    delays=a/b/c/d, dsn=X.Y.Z, status=sent|deferred|bounced (TEXT)

The process name after the last ``/`` of the syslog name tells the agents apart:
``smtp`` is the SMTP client, whatever transport runs it (``postfix/smtp``,
``postfix/relay/smtp``, a pool transport ``postfix/pw_main_203_0_113_10/smtp``);
``lmtp``, ``local``, ``virtual`` and ``pipe`` deliver on or beside this host;
``error`` (the ``retry`` service too) defers or bounces without contacting anyone.
Only ``smtp`` lines are outbound. The transport is the part of the syslog name after
its first ``/`` (``pw_main_203_0_113_10``), or the process name when there is none
(``smtp``).

The counts follow pflogsumm's rules, so that both give the same numbers for the
same lines: every delivery line counts once under its status, a ``sent`` line whose
text says ``forwarded as`` is a forward (local(8) passed the message on) and not a
delivery, and a recipient's domain is what follows its ``@``, in lower case (the
last ``@``; pflogsumm takes the first, which differs only for a quoted local part
that holds one).
"""

from __future__ import annotations

import datetime
import gzip
import math
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TextIO

from postwarden.gc_pause import cyclic_gc_paused

DAY = 86400.0
OUTBOUND = "smtp"
"""The process name of Postfix's SMTP client."""
DELIVERY_STATUSES = frozenset({"sent", "deferred", "bounced"})
PROBE_STATUSES = frozenset({"deliverable", "undeliverable"})
"""Address verification (``sendmail -bv``, verify(8)) logs its probes like deliveries."""

MARK = ": to=<"
"""Every delivery line holds it and hardly any other line does (smtpd's and
cleanup's rejects log ``from=<...> to=<...>``, without the colon)."""

_DELIVERY = re.compile(
    r"(?P<stamp>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d|\d{4}-\S+) (?P<host>\S+) "
    r"(?P<tag>[^\s\[]+)\[(?P<pid>\d+)\]: "
    r"(?P<queue_id>[0-9A-Za-z]+): to=<(?P<recipient>[^>]*)>, (?:orig_to=<[^>]*>, )?"
    r"relay=(?P<relay>[^,]+), (?:conn_use=(?P<conn_use>\d+), )?delay=[^,]+, "
    r"(?:delays=[^,]+, )?(?:dsn=(?P<dsn>[^,]+), )?status=(?P<status>\w+)"
    r"(?: \((?P<text>.*)\))?$"
)
_SYSLOG_STAMP = re.compile(r"([A-Z][a-z]{2}) ([ \d]\d) (\d\d):(\d\d):(\d\d)$")
_ISO_STAMP = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d):(\d\d(?:\.\d+)?)(Z|[+-]\d\d:?\d\d)?$", re.ASCII
)
_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1
    )
}
_BLOCK = 1 << 22
_new = tuple.__new__


class PostfixLogUnreadable(Exception):
    """The Postfix log is missing, unreadable, or not text (a broken .gz)."""


class Delivery(NamedTuple):
    """One delivery line: one attempt to deliver a message to one recipient."""

    time: float
    host: str
    transport: str
    """The syslog name after ``postfix/`` (``pw_main_203_0_113_10``, ``relay``), or
    the process name when the syslog name is plain ``postfix``."""
    process: str
    """The delivery agent: ``smtp`` for outbound mail; ``lmtp``, ``local``, ...."""
    queue_id: str
    recipient: str
    domain: str
    relay: str
    status: str
    """``sent``, ``deferred``, ``bounced``, or ``forwarded`` (a sent line of local(8)
    that passed the message on)."""
    dsn: str
    text: str
    """What the agent said in brackets after the status: the remote server's reply, or
    why no server was reached."""
    connection: bool
    """This line opened, or tried to open, an SMTP connection of its own; see
    :func:`parse_deliveries` for the rules."""

    @property
    def outbound(self) -> bool:
        return self.process == OUTBOUND


@dataclass
class DeliveryLog:
    """What reading a log found: its deliveries, and how many lines it read, left
    out or could not read."""

    deliveries: list[Delivery] = field(default_factory=list)
    """Empty when the deliveries were streamed (:func:`iter_deliveries`)."""
    lines: int = 0
    """Every line read; the lines that are no delivery lines are ignored."""
    outside: int = 0
    """Delivery lines outside the period."""
    skipped: Counter[str] = field(default_factory=Counter)
    """Lines that look like delivery lines but could not be read, by reason: no
    numbers are made up for them."""


def read_deliveries(
    path: str | Path,
    start: float | None = None,
    end: float | None = None,
    reference: float | None = None,
) -> DeliveryLog:
    """The delivery lines of the log at ``path`` (gzip-compressed when it ends in
    ``.gz``, as logrotate leaves old logs), as :func:`parse_deliveries` reads them,
    in a list."""
    log = DeliveryLog()
    with cyclic_gc_paused():
        log.deliveries = list(iter_deliveries(path, start, end, reference, log))
    return log


def iter_deliveries(
    path: str | Path,
    start: float | None = None,
    end: float | None = None,
    reference: float | None = None,
    log: DeliveryLog | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Delivery]:
    """The same one at a time, so that memory stays flat however long the log: what
    a report that only counts should use. The counts of lines go to ``log`` as the
    reading goes. A log that cannot be opened raises PostfixLogUnreadable here; one
    that breaks later (a cut .gz), while iterating. ``progress`` is told how many
    bytes of the file were read, after each block."""
    try:
        handle = _open(Path(path))
    except OSError as error:
        raise PostfixLogUnreadable(f"{path}: {error.strerror or error}") from None
    reader = _Reader(log or DeliveryLog(), start, end, reference)
    return _streamed(str(path), handle, reader, progress)


def parse_deliveries(
    blocks: Iterable[str],
    start: float | None = None,
    end: float | None = None,
    reference: float | None = None,
) -> DeliveryLog:
    """The delivery lines of ``blocks`` (strings of whole lines: a list of lines will
    do) whose time is in [start, end), epoch seconds.

    A syslog stamp has no year: it is the year of ``reference`` (default: now), or
    the year before when that would put the line more than a day after
    ``reference``; it is local time. An ISO-8601 stamp says its year and offset.

    Connections (outbound lines only). Postfix logs ``conn_use=N`` (N >= 2) on a
    delivery over a connection it reused from its cache: such a line opened none.
    A line without ``conn_use`` opened a connection of its own, except that the
    recipients of one message delivered in one SMTP session each get a line: a line
    for the same queue ID and relay as the line just before it from the same process
    belongs to the same connection. A failed connect (``relay=none`` and ``connect
    to HOST[IP]:PORT: Connection refused`` or a timeout) counts as a connection
    attempted, since the address was tried; any other ``relay=none`` line (the MX
    lookup failed, say) tried no address and counts none. When the client tries
    several MX hosts before one answers or the last fails, only the delivery line
    is read, so the whole try counts once.
    """
    log = DeliveryLog()
    reader = _Reader(log, start, end, reference)
    with cyclic_gc_paused():
        log.deliveries = [d for block in blocks for d in reader.block(block)]
    return log


def _open(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return path.open(encoding="utf-8", errors="replace")


def _streamed(
    path: str, handle: TextIO, reader: _Reader, progress: Callable[[int], None] | None
) -> Iterator[Delivery]:
    with handle:
        try:
            for block in _blocks(handle):
                yield from reader.block(block)
                if progress is not None:
                    progress(_position(handle))
        except OSError as error:
            raise PostfixLogUnreadable(f"{path}: {error.strerror or error}") from None
        except EOFError:
            raise PostfixLogUnreadable(f"{path}: the compressed file is cut short") from None


def _position(handle: TextIO) -> int:
    """How far into the file on disk: a compressed log's compressed bytes."""
    binary = getattr(handle, "buffer", None)
    inner = getattr(binary, "fileobj", None) or binary
    tell = getattr(inner, "tell", None)
    return int(tell()) if callable(tell) else 0


def _blocks(handle: TextIO) -> Iterator[str]:
    """The text in large blocks of whole lines: the reader looks for delivery lines
    with str.find over a block, so the other lines cost no Python step each."""
    rest = ""
    while chunk := handle.read(_BLOCK):
        cut = chunk.rfind("\n") + 1
        if cut == 0:
            rest += chunk
            continue
        yield rest + chunk[:cut]
        rest = chunk[cut:]
    if rest:
        yield rest


class _Reader:
    def __init__(
        self, log: DeliveryLog, start: float | None, end: float | None, reference: float | None
    ) -> None:
        self.log = log
        self.start = start
        self.end = end
        self.reference = time.time() if reference is None else reference
        self.year = time.localtime(self.reference).tm_year
        self.minutes: dict[str, float] = {}
        self.iso_minutes: dict[str, float] = {}
        self.bad: set[str] = set()
        self.tags: dict[str, tuple[str, str]] = {}
        self.last: dict[tuple[str, str], tuple[str, str, str | None]] = {}

    def block(self, text: str) -> Iterator[Delivery]:
        # Hand-written for speed (bench/report_bench.py: a log of 1,000,000 lines read
        # in 2.7 s, the whole report 4.6x faster than pflogsumm). The loop visits only
        # the lines holding MARK, found by str.find: the other lines, most of a log,
        # cost no Python step and no regex. One regex match reads a whole delivery
        # line; a syslog stamp is converted once per minute; records are made with
        # tuple.__new__, which skips the NamedTuple constructor's Python frame.
        log = self.log
        log.lines += text.count("\n") + (not text.endswith("\n") and bool(text))
        find, rfind, match = text.find, text.rfind, _DELIVERY.match
        start = -math.inf if self.start is None else self.start
        end = math.inf if self.end is None else self.end
        minutes, tags, last = self.minutes, self.tags, self.last
        at = find(MARK)
        while at >= 0:
            begin = rfind("\n", 0, at) + 1
            stop = find("\n", at)
            if stop < 0:
                stop = len(text)
            found = match(text, begin, stop)
            at = find(MARK, stop)
            if found is None:
                self.skip(text[begin:stop])
                continue
            stamp, host, tag, pid, queue_id, recipient, relay, conn_use, dsn, status, said = (
                found.groups()
            )
            minute = minutes.get(stamp[:12]) if len(stamp) == 15 else None
            if minute is not None:
                moment = minute + int(stamp[13:15])
            else:
                timed = self.time(stamp)  # the first of its minute, an ISO stamp, or bad
                if timed is None:
                    continue
                moment = timed
            if not start <= moment < end:
                log.outside += 1
                continue
            said = said or ""
            if status not in DELIVERY_STATUSES:
                log.skipped[
                    "address verification, not a delivery"
                    if status in PROBE_STATUSES
                    else f"unknown status {status!r}"
                ] += 1
                continue
            if status == "sent" and "forwarded as " in said:
                status = "forwarded"
            names = tags.get(tag)
            if names is None:
                names = tags[tag] = _names(tag)
            transport, process = names
            connection = False
            if process == OUTBOUND:
                key = (host, pid)
                now = (queue_id, relay, conn_use)
                if conn_use is None and last.get(key) != now:
                    connection = relay != "none" or said.startswith("connect to ")
                last[key] = now
            at_sign = recipient.rfind("@")
            yield _new(
                Delivery,
                (
                    moment,
                    host,
                    transport,
                    process,
                    queue_id,
                    recipient,
                    (recipient[at_sign + 1 :] if at_sign >= 0 else recipient).lower(),
                    relay,
                    status,
                    dsn or "",
                    said,
                    connection,
                ),
            )

    def skip(self, line: str) -> None:
        stamp, _, rest = _split_stamp(line)
        if stamp is None:
            reason = "no time stamp"
        elif ", status=" not in rest:
            reason = "delivery line without a status"
        else:
            reason = "delivery line in an unknown form"
        self.log.skipped[reason] += 1

    def time(self, stamp: str) -> float | None:
        """Epoch seconds of a stamp, or None (the line counted as skipped)."""
        if len(stamp) == 15:
            key = stamp[:12]
            minute = None if key in self.bad else self.minutes.get(key)
            if minute is None and key not in self.bad:
                minute = self.syslog_minute(stamp)
                if minute is None:
                    self.bad.add(key)
                else:
                    self.minutes[key] = minute
            if minute is not None:
                return minute + int(stamp[13:15])
        else:
            moment = self.iso(stamp)
            if moment is not None:
                return moment
        parts = _SYSLOG_STAMP.match(stamp) or _ISO_STAMP.match(stamp)
        self.log.skipped["no time stamp" if parts is None else "impossible date"] += 1
        return None

    def syslog_minute(self, stamp: str) -> float | None:
        parts = _SYSLOG_STAMP.match(stamp)
        if parts is None:
            return None
        month = _MONTHS.get(parts[1])
        day, hour, minute = int(parts[2]), int(parts[3]), int(parts[4])
        if month is None or hour > 23 or minute > 59 or int(parts[5]) > 60:
            return None
        for year in (self.year, self.year - 1):
            try:
                datetime.date(year, month, day)
            except ValueError:
                continue  # 29 February of a year that has none: try the year before
            moment = time.mktime((year, month, day, hour, minute, 0, 0, 0, -1))
            if moment <= self.reference + DAY:
                return moment
        return None

    def iso(self, stamp: str) -> float | None:
        parts = _ISO_STAMP.match(stamp)
        if parts is None:
            return None
        key = parts[1] + (parts[3] or "")
        minute = self.iso_minutes.get(key)
        if minute is None and key not in self.bad:
            try:
                moment = datetime.datetime.fromisoformat(f"{parts[1]}:00{parts[3] or ''}")
            except ValueError:
                self.bad.add(key)
                return None
            # without an offset the stamp is local time, as timestamp() reads it
            minute = self.iso_minutes[key] = moment.timestamp()
        if minute is None:
            return None
        return minute + float(parts[2])


def _names(tag: str) -> tuple[str, str]:
    """(transport, process) of ``postfix/pw_main_203_0_113_10/smtp``."""
    name, _, process = tag.rpartition("/")
    return name.partition("/")[2] or process, process


def _split_stamp(line: str) -> tuple[str | None, str, str]:
    """(stamp, host, rest) of a line, or (None, "", line) without a stamp."""
    if _SYSLOG_STAMP.match(line[:15]):
        stamp, rest = line[:15], line[16:]
    else:
        stamp, _, rest = line.partition(" ")
        if not _ISO_STAMP.match(stamp):
            return None, "", line
    host, _, rest = rest.partition(" ")
    return stamp, host, rest
