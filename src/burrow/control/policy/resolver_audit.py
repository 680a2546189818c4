"""``burrow audit`` on a node: the running resolvers' configurations must log no query.

Every Unbound and dnsmasq process on the host is found through ``/proc``, and the
configuration it runs with (its command line and the files it names, one ``include`` or
``conf-file`` level deep) is checked for anything that records queries: query or reply logs,
verbose logging, dnstap, statistics. Whatever the agent wrote, a setting switched on by hand
is found here.

Imports the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")

_UNBOUND_LOGS = re.compile(
    r"^\s*(log-queries|log-replies|log-local-actions|log-servfail|dnstap-enable"
    r"|dnstap-log-client-query-messages|dnstap-log-resolver-query-messages)\s*:\s*yes\b",
    re.IGNORECASE,
)
_UNBOUND_VERBOSITY = re.compile(r"^\s*verbosity\s*:\s*(\d+)")
_UNBOUND_STATS = re.compile(r"^\s*statistics-interval\s*:\s*([1-9]\d*)")
_UNBOUND_INCLUDE = re.compile(r'^\s*include\s*:\s*"?([^"\s]+)"?')
_DNSMASQ_LOGS = re.compile(r"^\s*(log-queries|log-debug)\b")
_DNSMASQ_CONF = re.compile(r"^\s*conf-file\s*=\s*(\S+)")
# Unbound at verbosity 3 and above writes a line per query.
QUERY_VERBOSITY = 3


@dataclass(frozen=True)
class ResolverProblem:
    where: str
    what: str


@dataclass(frozen=True)
class RunningResolver:
    pid: int
    program: str
    argv: list[str]


def running_resolvers(proc: Path = PROC) -> Iterator[RunningResolver]:
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        argv = [part.decode(errors="replace") for part in raw.split(b"\0") if part]
        if not argv:
            continue
        program = Path(argv[0]).name
        if program in ("unbound", "dnsmasq"):
            yield RunningResolver(int(entry.name), program, argv)


def _read_lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", errors="replace") as handle:
        yield from handle


def _unbound(resolver: RunningResolver) -> tuple[list[ResolverProblem], list[str]]:
    argv = resolver.argv
    config = argv[argv.index("-c") + 1] if "-c" in argv[:-1] else "/etc/unbound/unbound.conf"
    problems: list[ResolverProblem] = []
    notes: list[str] = []
    if argv.count("-v") >= QUERY_VERBOSITY:
        problems.append(ResolverProblem(f"unbound pid {resolver.pid}", "runs with -v -v -v"))
    files, seen = [Path(config)], 0
    while files and seen < 20:
        path = files.pop(0)
        seen += 1
        try:
            for number, line in enumerate(_read_lines(path), start=1):
                where = f"{path}:{number} (unbound pid {resolver.pid})"
                if _UNBOUND_LOGS.match(line):
                    problems.append(ResolverProblem(where, f"query logging: {line.strip()}"))
                level = _UNBOUND_VERBOSITY.match(line)
                if level and int(level[1]) >= QUERY_VERBOSITY:
                    problems.append(ResolverProblem(where, f"logs every query: {line.strip()}"))
                if _UNBOUND_STATS.match(line):
                    problems.append(ResolverProblem(where, f"query statistics: {line.strip()}"))
                include = _UNBOUND_INCLUDE.match(line)
                if include:
                    files.append(Path(include[1]))
        except OSError as exc:
            notes.append(f"{path}: cannot be read ({exc.strerror or exc})")
    return problems, notes


def _dnsmasq(resolver: RunningResolver) -> tuple[list[ResolverProblem], list[str]]:
    problems: list[ResolverProblem] = []
    notes: list[str] = []
    files: list[Path] = []
    for index, arg in enumerate(resolver.argv[1:], start=1):
        if arg in ("-q", "--log-queries") or arg.startswith(("--log-queries=", "--log-debug")):
            problems.append(ResolverProblem(f"dnsmasq pid {resolver.pid}", f"runs with {arg}"))
        if arg.startswith("--conf-file="):
            files.append(Path(arg.split("=", 1)[1]))
        elif arg in ("-C", "--conf-file") and index + 1 < len(resolver.argv):
            files.append(Path(resolver.argv[index + 1]))
    if not files:
        files.append(Path("/etc/dnsmasq.conf"))
    seen = 0
    while files and seen < 100:
        path = files.pop(0)
        seen += 1
        try:
            for number, line in enumerate(_read_lines(path), start=1):
                if line.startswith("local=/"):
                    continue  # a filter list's line, the bulk of the files
                if _DNSMASQ_LOGS.match(line):
                    where = f"{path}:{number} (dnsmasq pid {resolver.pid})"
                    problems.append(ResolverProblem(where, f"query logging: {line.strip()}"))
                included = _DNSMASQ_CONF.match(line)
                if included:
                    files.append(Path(included[1]))
        except OSError as exc:
            notes.append(f"{path}: cannot be read ({exc.strerror or exc})")
    return problems, notes


def check_resolvers(proc: Path = PROC) -> tuple[int, list[ResolverProblem], list[str]]:
    """(resolvers found, problems, notes) for every Unbound and dnsmasq running here."""
    count = 0
    problems: list[ResolverProblem] = []
    notes: list[str] = []
    for resolver in running_resolvers(proc):
        count += 1
        check = _unbound if resolver.program == "unbound" else _dnsmasq
        found, unread = check(resolver)
        problems += found
        notes += unread
    return count, problems, notes
