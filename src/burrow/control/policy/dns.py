"""DNS filter lists and the resolver addresses of filter combinations.

A filter list is a text file the operator keeps: one domain name a line; blank lines and
``#`` comments are skipped, and so is a hosts-file line's address (``0.0.0.0 ads.example``).
Anything else that is not a domain name is a malformed line: skipped and counted, so the
admin sees how many. The names are lower-cased and de-duplicated into the body the
nodes download; its SHA-256 names the list, so a node fetches a list only when it changed.

Addresses: the unfiltered resolver is the gateway (index 1 of both tunnel pools). A
combination of lists is a number (bit n set: list n of ``[dns.filters]``, in file order), and
combination m answers at index ``last - m + 1``, counted back from the end of the pools. A new
list at the end only extends the reserved block; no existing combination's address moves.

Imports the standard library and the policy schemas.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from dataclasses import dataclass
from pathlib import Path

from burrow.control.policy.schemas import DnsSection

log = logging.getLogger(__name__)

_LABEL = r"(?!-)[a-z0-9_-]{1,63}(?<!-)"
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_HOSTS_ADDRESSES = {"0.0.0.0", "127.0.0.1", "::", "::1"}
MAX_NAME_LENGTH = 253


@dataclass(frozen=True)
class ParsedList:
    names: list[str]
    malformed: int
    body: bytes = b""
    sha256: str = hashlib.sha256(b"").hexdigest()

    @classmethod
    def of(cls, names: list[str], malformed: int) -> ParsedList:
        body = "".join(f"{name}\n" for name in names).encode("ascii")
        return cls(names, malformed, body, hashlib.sha256(body).hexdigest())


def _name_of(line: str) -> str | None:
    """The domain name a line holds; '' for a line with nothing in it; None when malformed."""
    line = line.split("#", 1)[0].strip()
    if not line:
        return ""
    parts = line.split()
    if len(parts) == 2 and parts[0] in _HOSTS_ADDRESSES:
        parts = parts[1:]
    if len(parts) != 1:
        return None
    name = parts[0].lower().rstrip(".")
    if name.startswith("*."):
        name = name[2:]  # a wildcard says what a name already means here: it and below
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            return None
    if len(name) > MAX_NAME_LENGTH or not _NAME.fullmatch(name):
        return None
    return name


# The common lines (a plain name, a hosts-file line, blank, a comment), matched in bulk by the
# regex engine: a list of a million names parses in about a second. What is left over goes
# through ``_name_of`` one line at a time (international names, and the malformed).
_NAME_TEXT = rf"{_LABEL}(?:\.{_LABEL})*"
_HOSTS = r"(?:(?:0\.0\.0\.0|127\.0\.0\.1)[ \t]+)?"
_GOOD = re.compile(
    rf"^[ \t]*{_HOSTS}(?:\*\.)?({_NAME_TEXT})\.?[ \t]*(?:#[^\n]*)?\r?$", re.MULTILINE
)
_GOOD_OR_EMPTY_LINE = re.compile(
    rf"^(?:[ \t]*{_HOSTS}(?:\*\.)?{_NAME_TEXT}\.?[ \t]*"
    r"(?:#[^\n]*)?|[ \t]*(?:#[^\n]*)?)\r?(?:\n|\Z)",
    re.MULTILINE,
)


def parse_filter_list(text: str) -> ParsedList:
    """The list's names (unique, in the file's order) and how many lines were malformed."""
    text = text.lower()
    found = _GOOD.findall(text)
    # In the file's order, first time each: sorting a million names would cost more than
    # all the rest, and the hash then changes only when the operator changes the file.
    names = dict.fromkeys(name for name in found if len(name) <= MAX_NAME_LENGTH)
    malformed = sum(1 for name in found if len(name) > MAX_NAME_LENGTH)
    for line in _GOOD_OR_EMPTY_LINE.sub("", text).splitlines():
        name = _name_of(line)
        if name is None:
            malformed += 1
        elif name:
            names.setdefault(name)
    return ParsedList.of(list(names), malformed)


@dataclass(frozen=True)
class FilterList:
    name: str
    title: str
    path: Path
    sha256: str
    count: int
    malformed: int
    body: bytes
    error: str | None = None


def _list_path(file: str, base_dir: Path) -> Path:
    path = Path(file)
    return path if path.is_absolute() else base_dir / path


class FilterListStore:
    """The policy's lists, parsed once per version of each file (path, size, mtime)."""

    def __init__(self) -> None:
        self._cache: dict[Path, tuple[tuple[int, int], ParsedList]] = {}

    def _parsed(self, path: Path) -> ParsedList:
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == key:
            return cached[1]
        parsed = parse_filter_list(path.read_text(encoding="utf-8", errors="replace"))
        self._cache[path] = (key, parsed)
        if parsed.malformed:
            log.warning("dns.list_malformed_lines", extra={"lines": parsed.malformed})
        return parsed

    def fresh(self, section: DnsSection, base_dir: Path) -> bool:
        """Whether every list of ``section`` is parsed at its file's current version (a stat
        each): then ``lists`` parses nothing."""
        for entry in section.filters.values():
            path = _list_path(entry.file, base_dir)
            cached = self._cache.get(path)
            try:
                stat = path.stat()
            except OSError:
                return False
            if cached is None or cached[0] != (stat.st_mtime_ns, stat.st_size):
                return False
        return True

    def lists(self, section: DnsSection, base_dir: Path) -> list[FilterList]:
        """Every list of ``section``; one that cannot be read is empty and says why."""
        found = []
        for name, entry in section.filters.items():
            path = _list_path(entry.file, base_dir)
            try:
                parsed = self._parsed(path)
                error = None
            except OSError as exc:
                parsed = ParsedList([], 0)
                error = f"cannot read {path}: {exc.strerror or exc}"
            found.append(
                FilterList(
                    name=name,
                    title=entry.title,
                    path=path,
                    sha256=parsed.sha256,
                    count=len(parsed.names),
                    malformed=parsed.malformed,
                    body=parsed.body,
                    error=error,
                )
            )
        return found


filter_lists = FilterListStore()


def resolver_addresses(tunnel_ipv4_pool: str, tunnel_ipv6_pool: str, mask: int) -> tuple[str, str]:
    """The resolver addresses of combination ``mask`` (0: unfiltered, the gateway)."""
    pool4 = ipaddress.ip_network(tunnel_ipv4_pool)
    pool6 = ipaddress.ip_network(tunnel_ipv6_pool)
    if mask == 0:
        index = 1
    else:
        # The pools' last usable index (IPv4 broadcast left out), as the devices count it.
        last = min(pool4.num_addresses - 2, pool6.num_addresses - 1)
        index = last - mask + 1
    return str(pool4.network_address + index), str(pool6.network_address + index)


def client_dns(tunnel_ipv4_pool: str, tunnel_ipv6_pool: str, mask: int = 0) -> str:
    """The ``DNS =`` value of a device config: both resolver addresses of its combination."""
    return ", ".join(resolver_addresses(tunnel_ipv4_pool, tunnel_ipv6_pool, mask))
