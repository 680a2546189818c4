"""deploy/: the systemd units pass ``systemd-analyze verify`` without a word of complaint,
restart on failure and hold no more privilege than they need; the Caddyfile is valid."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

DEPLOY = ROOT / "deploy"
UNITS = ("burrow.service", "burrow-node.service")


def _unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((DEPLOY / name).read_text())
    return parser


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (it comes with systemd)")
    # The units name the install path of the README; here the program is this checkout's.
    install = Path(sys.executable).parents[2]
    paths = []
    for name in UNITS:
        text = (DEPLOY / name).read_text().replace("/opt/burrow", str(install))
        path = tmp_path / name
        path.write_text(text)
        paths.append(str(path))
    done = subprocess.run(
        ["systemd-analyze", "verify", *paths], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    # Unknown keys and bad values are only warnings to systemd: any output is a defect.
    assert done.stderr.strip() == "", done.stderr
    assert done.stdout.strip() == "", done.stdout


def test_both_restart_on_failure_the_control_plane_unprivileged() -> None:
    control = _unit("burrow.service")["Service"]
    node = _unit("burrow-node.service")["Service"]
    assert control["Restart"] == node["Restart"] == "on-failure"
    assert control["User"] == "burrow"
    assert control["CapabilityBoundingSet"] == ""
    assert control["NoNewPrivileges"] == "yes"
    assert "burrow serve" in control["ExecStart"]
    capabilities = set(node["CapabilityBoundingSet"].split())
    assert "CAP_NET_ADMIN" in capabilities
    assert capabilities <= {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
    assert node["NoNewPrivileges"] == "yes"
    assert "burrow node run" in node["ExecStart"]


def test_the_caddyfile_is_valid() -> None:
    if shutil.which("caddy") is None:
        pytest.skip("caddy is not installed (apt install caddy)")
    done = subprocess.run(
        ["caddy", "validate", "--adapter", "caddyfile", "--config", str(DEPLOY / "Caddyfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "reverse_proxy 127.0.0.1:8080" in (DEPLOY / "Caddyfile").read_text()


def test_the_readme_goes_to_production_in_at_most_ten_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Going to production", 1)[1].split("\n## ", 1)[0]
    block = section.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line for line in block.splitlines() if line.strip()]
    assert 1 <= len(commands) <= 10, commands
    for name in ("burrow.service", "burrow-node.service", "Caddyfile", "burrow.env.example"):
        assert f"deploy/{name}" in block or name in section
        assert (DEPLOY / name).exists()
    assert "systemctl enable --now burrow" in block
