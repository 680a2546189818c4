"""``burrow node enroll`` against a real control plane on loopback, and ``burrow node run``'s
refusals; the embedded node's helpers."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from burrow.cli.embedded import (
    local_enrollment_token,
    local_node_data,
    loopback_url,
    put_back_line,
)
from burrow.cli.main import app
from burrow.control.config import Settings
from burrow.control.db import unit_of_work
from burrow.control.nodes.service import node as node_service
from burrow.control.runtime import Runtime
from burrow.node.identity import load_identity
from tests.support.factories import new_public_key
from tests.support.server import serving


@pytest.fixture
def server_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"scheduler_enabled": False})


async def test_enroll_keeps_one_private_file_and_enrolling_again_keeps_the_key(
    runtime: Runtime, server_settings: Settings, tmp_path: Path
) -> None:
    if not server_settings.is_sqlite:
        pytest.skip("one backend is enough for the command line")
    async with unit_of_work(runtime.sessionmaker) as session:
        created = await node_service.create(session, runtime, local_node_data(server_settings))
        node_id = created.node.id
    state = tmp_path / "node"
    runner = CliRunner()

    async def invoke(args: list[str]) -> Result:
        # The command runs its own event loop: give it a thread of its own.
        return await asyncio.to_thread(runner.invoke, app, args)

    with serving(server_settings) as server:
        result = await invoke(
            ["node", "enroll", "--control", server.url, "--token", created.enrollment.token,
             "--state-dir", str(state)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "enrolled" in result.output
        # The identity and the OpenVPN/IKEv2 PKI made with it, both readable by root only.
        files = sorted(state.iterdir())
        assert [f.name for f in files] == ["identity.json", "openvpn-pki.json"]
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
        first = load_identity(state)
        assert first.node_id == node_id
        assert first.interface_name == f"bw{node_id}"

        # The same token twice: refused, with the control plane's explanation, file untouched.
        again = await invoke(
            ["node", "enroll", "--control", server.url, "--token", created.enrollment.token,
             "--state-dir", str(state)],
        )  # fmt: skip
        assert again.exit_code == 1
        assert "burrow node token" in again.output
        assert load_identity(state) == first

        async with unit_of_work(runtime.sessionmaker) as session:
            node = await node_service.get(session, node_id)
            token = (await node_service.new_enrollment_token(session, runtime, node)).token
        renewed = await invoke(
            ["node", "enroll", "--control", server.url, "--token", token,
             "--state-dir", str(state)],
        )  # fmt: skip
        assert renewed.exit_code == 0, renewed.output
        second = load_identity(state)
        assert second.public_key == first.public_key  # devices' configs stay valid
        assert second.node_token != first.node_token
    raw = json.loads((state / "identity.json").read_text())
    assert set(raw) == {
        "control_url",
        "node_id",
        "node_name",
        "interface_name",
        "private_key",
        "node_token",
    }


def test_enroll_refuses_a_control_plane_that_is_not_a_url(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["node", "enroll", "--control", "vpn.example.net", "--token", "bwe_x" * 4,
         "--state-dir", str(tmp_path)],
    )  # fmt: skip
    assert result.exit_code == 1
    assert "--control" in result.output


def test_enroll_says_when_the_control_plane_cannot_be_reached(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app,
        ["node", "enroll", "--control", "http://127.0.0.1:9", "--token", "bwe_" + "x" * 20,
         "--state-dir", str(tmp_path / "s")],
    )  # fmt: skip
    assert result.exit_code == 3
    assert "could not reach the control plane" in result.output
    assert not (tmp_path / "s").exists()


def test_run_without_an_identity_says_to_enroll(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["node", "run", "--state-dir", str(tmp_path)])
    assert result.exit_code == 3
    assert "burrow node enroll" in result.output


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8080"),
        ("::", "http://[::1]:8080"),
        ("10.1.2.3", "http://10.1.2.3:8080"),
        ("localhost", "http://localhost:8080"),
    ],
)
def test_the_embedded_node_reaches_the_api_on_loopback(host: str, url: str) -> None:
    assert loopback_url(host, 8080) == url


async def test_the_embedded_node_row_is_made_once(runtime: Runtime) -> None:
    first = await local_enrollment_token(runtime)
    second = await local_enrollment_token(runtime)
    assert first != second
    async with unit_of_work(runtime.sessionmaker) as session:
        nodes = [n for n in await node_service.list_all(session) if n.name == "local"]
    assert len(nodes) == 1
    assert nodes[0].endpoint_host == "testserver"


def test_the_embedded_node_is_where_the_settings_say(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BURROW_PUBLIC_HOST", "BURROW_PUBLIC_URL", "BURROW_EMBEDDED_NODE_CITY"):
        monkeypatch.delenv(name, raising=False)
    unset = local_node_data(Settings())
    assert unset.city != "Amsterdam"
    assert unset.country == "ZZ"  # ISO 3166's "unknown": nothing made up
    assert unset.endpoint_host == "127.0.0.1"
    chosen = local_node_data(
        Settings(
            public_host="vpn.example.net",
            embedded_node_country="de",
            embedded_node_city="Berlin",
            embedded_node_capacity=50,
        )
    )
    assert (chosen.endpoint_host, chosen.country, chosen.city, chosen.capacity) == (
        "vpn.example.net",
        "DE",
        "Berlin",
        50,
    )


async def test_a_restart_with_a_public_host_moves_the_embedded_node(runtime: Runtime) -> None:
    await local_enrollment_token(runtime)
    async with unit_of_work(runtime.sessionmaker) as session:
        node = await node_service.get_by_name(session, "local")
        node.wg_public_key = new_public_key()  # as if its agent had enrolled
        node.city = "Utrecht"  # changed since in the admin panel
    original = runtime.settings
    try:
        # Nothing given explicitly: the row stays as the operator left it.
        runtime.settings = Settings(
            **original.model_dump(exclude={"public_url", "embedded_node_city", "wireguard_port"})
        )
        await local_enrollment_token(runtime)
        async with unit_of_work(runtime.sessionmaker) as session:
            node = await node_service.get_by_name(session, "local")
            assert (node.endpoint_host, node.city) == ("testserver", "Utrecht")
            assert node.config_changed_at is None
        runtime.settings = original.model_copy(update={"public_host": "vpn.example.net"})
        await local_enrollment_token(runtime)
        async with unit_of_work(runtime.sessionmaker) as session:
            node = await node_service.get_by_name(session, "local")
            assert (node.endpoint_host, node.city) == ("vpn.example.net", "Utrecht")
            assert node.config_changed_at is not None  # customers are told
    finally:
        runtime.settings = original


def test_the_put_back_line_names_only_what_was_changed() -> None:
    assert put_back_line(None, []) is None  # never served, changed nothing: no claim
    assert put_back_line(None, ["net.ipv4.ip_forward=0"]) == (
        "the embedded node put back what it changed on this host: IP forwarding as it was "
        "before (net.ipv4.ip_forward=0)"
    )
    line = put_back_line("bw1", [])
    assert line is not None
    assert "interface bw1 removed" in line
    assert "IP forwarding" not in line
