"""The namespace lab itself: it must skip cleanly and leave nothing behind."""

from __future__ import annotations

import os
import subprocess

import pytest

from .netns import Lab, missing_requirements, needs


def test_not_being_root_is_a_one_line_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert missing_requirements() == "needs root for network namespaces"


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert missing_requirements("wireguard-go") == "needs ip, wireguard-go on PATH"


def namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    return {line.split()[0] for line in out.stdout.splitlines() if line.strip()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child of ours stays a zombie until reaped; a zombie is not running.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


@needs("sleep")
def test_the_lab_removes_namespaces_and_processes_even_after_a_failure() -> None:
    names: set[str] = set()
    started: list[subprocess.Popen[str]] = []
    strays: list[int] = []

    def experiment() -> None:
        with Lab() as lab:
            a, b = lab.namespace(), lab.namespace()
            a_end, b_end = lab.link(a, b, ["10.200.0.1/30"], ["10.200.0.2/30"])
            assert "10.200.0.2/30" in b.ip("address", "show", "dev", b_end).stdout
            assert a.run("ip", "link", "show", a_end).returncode == 0
            started.append(a.spawn("sleep", "60"))
            # A process the lab did not start itself, left running inside a namespace.
            strays.append(int(b.run("sh", "-c", "sleep 60 >/dev/null 2>&1 & echo $!").stdout))
            names.update({a.name, b.name})
            assert names <= namespaces()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        experiment()
    assert len(names) == 2
    assert not names & namespaces()
    assert started[0].poll() is not None
    assert not alive(strays[0])
