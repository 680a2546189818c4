"""Filter lists: parsing (malformed lines skipped and counted), hashing, and [dns] rules."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from pydantic import ValidationError

from burrow.control.policy.dns import (
    FilterListStore,
    client_dns,
    parse_filter_list,
    resolver_addresses,
)
from burrow.control.policy.schemas import DnsFilterSection, DnsSection


def test_names_are_cleaned_and_malformed_lines_counted() -> None:
    parsed = parse_filter_list(
        "# ads we block\n"
        "\n"
        "Ads.Example.COM\n"
        "ads.example.com.\n"  # the same name again
        "0.0.0.0 tracker.example  # hosts-file style\n"
        "*.wild.example\n"
        "bücher.example\n"
        "not a name\n"
        "-bad.example\n"
        "under_score.example\n" + ("x" * 64 + ".example\n") + "http://ads.example/\n"
    )
    assert parsed.names == [
        "ads.example.com",
        "tracker.example",
        "wild.example",
        "under_score.example",
        "xn--bcher-kva.example",  # found in the second, line-by-line pass
    ]
    assert parsed.malformed == 4
    assert parsed.body == b"".join(name.encode() + b"\n" for name in parsed.names)


def test_an_empty_list_is_fine() -> None:
    parsed = parse_filter_list("")
    assert parsed.names == []
    assert parsed.malformed == 0
    assert parsed.body == b""
    assert parse_filter_list("# nothing yet\n\n").names == []


def test_a_million_names_load(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("".join(f"host{n}.block{n % 997}.example\n" for n in range(1_000_000)))
    section = DnsSection(filters={"big": DnsFilterSection(title="Big", file=str(path))})
    store = FilterListStore()
    (entry,) = store.lists(section, tmp_path)
    assert entry.count == 1_000_000
    assert entry.malformed == 0
    assert entry.error is None
    assert entry.sha256 == hashlib.sha256(entry.body).hexdigest()
    # Parsed once per version of the file.
    assert store.lists(section, tmp_path)[0].body is entry.body


def test_the_hash_changes_only_with_the_names(tmp_path: Path) -> None:
    path = tmp_path / "ads.txt"
    path.write_text("b.example\na.example\n")
    section = DnsSection(filters={"ads": DnsFilterSection(title="Ads", file="ads.txt")})
    store = FilterListStore()
    first = store.lists(section, tmp_path)[0].sha256
    path.write_text("# a comment, a repeat and capitals\nB.example\n\na.example\nb.example.\n")
    assert store.lists(section, tmp_path)[0].sha256 == first
    path.write_text("a.example\nc.example\n")
    assert store.lists(section, tmp_path)[0].sha256 != first


def test_a_store_is_fresh_only_while_every_file_is_parsed_at_its_version(tmp_path: Path) -> None:
    """``fresh`` lets a long poll skip the thread that parses lists when nothing changed."""
    path = tmp_path / "ads.txt"
    path.write_text("a.example\n")
    section = DnsSection(filters={"ads": DnsFilterSection(title="Ads", file="ads.txt")})
    store = FilterListStore()
    assert not store.fresh(section, tmp_path)  # never parsed
    store.lists(section, tmp_path)
    assert store.fresh(section, tmp_path)
    path.write_text("a.example\nb.example\n")
    assert not store.fresh(section, tmp_path)  # a new version of the file
    store.lists(section, tmp_path)
    assert store.fresh(section, tmp_path)
    path.unlink()
    assert not store.fresh(section, tmp_path)
    assert FilterListStore().fresh(DnsSection(), tmp_path)  # no lists: nothing to parse


def test_a_missing_file_is_an_empty_list_that_says_why(tmp_path: Path) -> None:
    section = DnsSection(filters={"ads": DnsFilterSection(title="Ads", file="gone.txt")})
    (entry,) = FilterListStore().lists(section, tmp_path)
    assert entry.count == 0
    assert entry.error is not None
    assert "gone.txt" in entry.error


def test_combinations_and_their_addresses() -> None:
    section = DnsSection(
        filters={
            name: DnsFilterSection(title=name, file=f"{name}.txt")
            for name in ("ads", "trackers", "malware")
        }
    )
    assert section.offered == [
        ("ads",),
        ("trackers",),
        ("malware",),
        ("ads", "trackers", "malware"),
    ]
    assert section.mask(("malware", "ads")) == 5
    assert section.reserved_addresses == 7
    assert resolver_addresses("10.64.0.0/10", "fd42:b0::/48", 0) == ("10.64.0.1", "fd42:b0::1")
    assert resolver_addresses("10.64.0.0/10", "fd42:b0::/48", 1) == (
        "10.127.255.254",
        "fd42:b0::3f:fffe",  # the same index in both pools
    )
    assert client_dns("10.8.0.0/24", "fd08::/112", 7) == "10.8.0.248, fd08::f8"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"combinations": [["ads", "gambling"]]}, "'gambling', which is not in dns.filters"),
        ({"combinations": [[]]}, "at least one filter list"),
        ({"forwarders": ["resolver.example"]}, "is not an IP address"),
        ({"filters": {"Bad Name": {"title": "x", "file": "x"}}}, "pattern"),
    ],
)
def test_bad_dns_sections_are_refused(raw: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"filters": {"ads": {"title": "Ads", "file": "ads.txt"}}}
    with pytest.raises(ValidationError, match=message):
        DnsSection.model_validate({**base, **raw})
