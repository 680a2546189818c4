"""An authoritative DNS server (NSD, from Debian) for a test zone, inside a lab namespace.

``write_nsd(directory, zone, records, addresses)`` writes NSD's configuration and the zone
file and returns the command line; the caller runs it in the namespace of its choice
(``Namespace.spawn``), so the server lives exactly as long as the lab.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

ZONE = "lab.test."

# The lab zone: a name per family, a name the ads filter blocks (with a name under it), and
# one more that no filter names.
RECORDS: dict[str, list[tuple[str, str]]] = {
    "www": [("A", "192.0.2.80"), ("AAAA", "2001:db8:ff::80")],
    "ok": [("A", "192.0.2.81")],
    "ads": [("A", "192.0.2.82")],
    "x.ads": [("A", "192.0.2.83")],
    "deep.x.ads": [("A", "192.0.2.84")],
    "adsnot": [("A", "192.0.2.85")],
}


def write_nsd(
    directory: Path,
    addresses: Sequence[str],
    *,
    zone: str = ZONE,
    records: Mapping[str, list[tuple[str, str]]] = RECORDS,
    port: int = 53,
) -> list[str]:
    directory.mkdir(parents=True, exist_ok=True)
    zone_file = directory / "zone"
    lines = [
        f"$ORIGIN {zone}",
        "$TTL 300",
        f"@ IN SOA ns.{zone} admin.{zone} 1 3600 600 86400 300",
        f"@ IN NS ns.{zone}",
        f"ns IN A {next(a for a in addresses if ':' not in a)}",
    ]
    for name, rows in records.items():
        lines += [f"{name} IN {kind} {value}" for kind, value in rows]
    zone_file.write_text("\n".join(lines) + "\n")
    config = directory / "nsd.conf"
    config.write_text(
        "server:\n"
        + "".join(f"\tip-address: {address}@{port}\n" for address in addresses)
        + f'\tzonesdir: "{directory}"\n'
        f'\tpidfile: ""\n'
        f'\tusername: ""\n'
        f'\tchroot: ""\n'
        f'\tdatabase: ""\n'
        f'\tzonelistfile: "{directory}/zone.list"\n'
        f'\txfrdfile: "{directory}/xfrd.state"\n'
        f'\tlogfile: "{directory}/nsd.log"\n'
        "\tverbosity: 0\n"
        "\tserver-count: 1\n"
        # Response rate limiting would answer a benchmark's steady queries with truncations.
        "\trrl-ratelimit: 0\n"
        "remote-control:\n"
        "\tcontrol-enable: no\n"
        "zone:\n"
        f'\tname: "{zone}"\n'
        f'\tzonefile: "{zone_file}"\n'
    )
    return ["nsd", "-d", "-c", str(config)]
