"""The UAPI client: parsing answers, encoding sets, and talking to a fake daemon's socket."""

from __future__ import annotations

import asyncio
import base64
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from burrow.node.drivers import uapi
from burrow.node.drivers.uapi import (
    AnswerParser,
    InterfaceSettings,
    PeerMemo,
    PeerRemoval,
    PeerUpsert,
    UapiClient,
    UapiErrnoError,
    UapiProtocolError,
    UapiUnavailable,
    WgPeer,
    encode_set,
    key_from_hex,
    key_to_hex,
    parse_answer,
)

HEX_A = "58402e695ba1772b1cc9309755f043251ea77fdcf10fbe63989ceb7e19321376"
HEX_B = "662e14fd594556f522604703340351258903b64f35553763f19426ab2a515c58"
KEY_A = base64.b64encode(bytes.fromhex(HEX_A)).decode()
KEY_B = base64.b64encode(bytes.fromhex(HEX_B)).decode()
PRIVATE_HEX = "e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a"
CLIENT_IP = "203.0.113.77"

# The shape wireguard-go writes (device/uapi.go: IpcGetOperation), including
# an endpoint, which must not survive parsing.
CAPTURED_GET = (
    f"private_key={PRIVATE_HEX}\n"
    "listen_port=51820\n"
    f"public_key={HEX_A}\n"
    "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
    "protocol_version=1\n"
    f"endpoint={CLIENT_IP}:40711\n"
    "last_handshake_time_sec=1716200000\n"
    "last_handshake_time_nsec=123456789\n"
    "tx_bytes=1980\n"
    "rx_bytes=2172\n"
    "persistent_keepalive_interval=0\n"
    "allowed_ip=10.64.0.2/32\n"
    "allowed_ip=fd42:b0::2/128\n"
    f"public_key={HEX_B}\n"
    "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
    "protocol_version=1\n"
    "last_handshake_time_sec=0\n"
    "last_handshake_time_nsec=0\n"
    "tx_bytes=0\n"
    "rx_bytes=0\n"
    "persistent_keepalive_interval=25\n"
    "errno=0\n"
    "\n"
).encode()


def test_a_captured_get_parses_into_typed_peers() -> None:
    device = parse_answer(CAPTURED_GET)
    assert device.has_private_key
    assert device.listen_port == 51820
    assert device.peers == (
        WgPeer(
            public_key=KEY_A,
            allowed_ips=("10.64.0.2/32", "fd42:b0::2/128"),
            last_handshake_sec=1716200000,
            last_handshake_nsec=123456789,
            rx_bytes=2172,
            tx_bytes=1980,
        ),
        WgPeer(public_key=KEY_B, persistent_keepalive_interval=25),
    )
    assert device.peers[0].last_handshake == pytest.approx(1716200000.123456789)
    assert device.peers[1].last_handshake is None


def test_the_endpoint_and_private_key_do_not_survive_parsing() -> None:
    device = parse_answer(CAPTURED_GET)
    assert CLIENT_IP not in repr(device)
    assert PRIVATE_HEX not in repr(device)
    assert not hasattr(device.peers[0], "endpoint")
    assert "endpoint" not in WgPeer.__slots__


@pytest.mark.parametrize("size", [1, 2, 7, 64, 4096])
def test_an_answer_parses_the_same_in_any_chunking(size: int) -> None:
    parser = AnswerParser()
    for start in range(0, len(CAPTURED_GET), size):
        assert not parser.done
        parser.feed(CAPTURED_GET[start : start + size])
    assert parser.done
    assert parser.result() == parse_answer(CAPTURED_GET)


def test_a_nonzero_errno_raises_with_the_errno() -> None:
    with pytest.raises(UapiErrnoError) as caught:
        parse_answer(b"errno=-22\n\n")
    assert caught.value.errno == -22
    assert "-22" in str(caught.value)


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"listen_port=1\n\n", id="no errno line"),
        pytest.param(b"errno=0\n\nerrno=0\n\n", id="data after the end"),
        pytest.param(b"listen_port\nerrno=0\n\n", id="line without ="),
        pytest.param(b"allowed_ip=10.0.0.1/32\nerrno=0\n\n", id="allowed_ip without a peer"),
        pytest.param(f"public_key={HEX_A[:-2]}\nerrno=0\n\n".encode(), id="short key"),
        pytest.param(
            f"public_key={HEX_A}\nrx_bytes={CLIENT_IP}\nerrno=0\n\n".encode(), id="bad number"
        ),
    ],
)
def test_a_malformed_answer_is_a_protocol_error_that_quotes_no_value(answer: bytes) -> None:
    with pytest.raises(UapiProtocolError) as caught:
        parse_answer(answer)
    assert CLIENT_IP not in str(caught.value)
    assert caught.value.__cause__ is None


def test_an_incomplete_answer_has_no_result() -> None:
    parser = AnswerParser()
    parser.feed(b"listen_port=1\nerrno=0\n")
    with pytest.raises(UapiProtocolError):
        parser.result()


def test_keys_convert_between_base64_and_hex() -> None:
    assert key_to_hex(KEY_A) == HEX_A
    assert key_from_hex(HEX_A) == KEY_A
    for bad in ("", KEY_A[:-4] + "====", "A" * 44, KEY_A + "\n"):
        with pytest.raises(ValueError, match="not a WireGuard key"):
            key_to_hex(bad)


def test_a_set_is_encoded_as_the_protocol_says() -> None:
    private = base64.b64encode(bytes.fromhex(PRIVATE_HEX)).decode()
    text = b"".join(
        encode_set(
            InterfaceSettings(private_key=private, listen_port=51820),
            [
                PeerRemoval(KEY_B),
                PeerUpsert(KEY_A, ("10.64.0.2/32", "fd42:b0::2/128")),
                PeerUpsert(KEY_B, ("10.64.0.3/32",), replace_allowed_ips=False),
                PeerUpsert(KEY_A, (), persistent_keepalive_interval=25),
            ],
        )
    )
    assert (
        text
        == (
            "set=1\n"
            f"private_key={PRIVATE_HEX}\n"
            "listen_port=51820\n"
            f"public_key={HEX_B}\n"
            "remove=true\n"
            f"public_key={HEX_A}\n"
            "replace_allowed_ips=true\n"
            "allowed_ip=10.64.0.2/32\n"
            "allowed_ip=fd42:b0::2/128\n"
            f"public_key={HEX_B}\n"
            "allowed_ip=10.64.0.3/32\n"
            f"public_key={HEX_A}\n"
            "persistent_keepalive_interval=25\n"
            "replace_allowed_ips=true\n"
            "\n"
        ).encode()
    )
    assert b"replace_peers" not in text


def test_a_large_set_streams_in_bounded_chunks() -> None:
    peers = [PeerUpsert(KEY_A, (f"10.{i >> 8}.{i & 255}.1/32",)) for i in range(5000)]
    chunks = list(encode_set(None, peers, chunk_size=4096))
    assert len(chunks) > 50
    assert all(len(chunk) < 4096 + 200 for chunk in chunks)
    assert b"".join(chunks) == b"".join(encode_set(None, peers, chunk_size=1 << 30))
    assert b"".join(chunks).count(b"\npublic_key=") == 5000


@pytest.mark.parametrize(
    "allowed_ip",
    ["10.64.0.2/32\nreplace_peers=true", "10.64.0.2", "", "10.64.0.2/32 ", "evil=1/32"],
)
def test_an_upsert_refuses_what_is_not_a_network(allowed_ip: str) -> None:
    with pytest.raises(ValueError, match="not an IP network"):
        PeerUpsert(KEY_A, (allowed_ip,))


def test_interface_settings_never_show_the_private_key() -> None:
    private = base64.b64encode(bytes.fromhex(PRIVATE_HEX)).decode()
    assert private not in repr(InterfaceSettings(private_key=private, listen_port=1))
    with pytest.raises(ValueError, match="listen_port"):
        InterfaceSettings(listen_port=70000)


# --- the client against a fake daemon on a socket in tmp_path ----------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Callable[[Handler], Awaitable[UapiClient]]]:
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> UapiClient:
        path = tmp_path / f"fake{len(servers)}.sock"
        servers.append(await asyncio.start_unix_server(handler, path))
        return UapiClient(path, io_timeout=5)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> bytes:
    """Everything up to the blank line that ends an operation."""
    return await reader.readuntil(b"\n\n")


async def test_get_streams_a_large_answer(
    serve: Callable[[Handler], Awaitable[UapiClient]],
) -> None:
    count = 20_000
    body = b"".join(
        f"public_key={i:064x}\nendpoint={CLIENT_IP}:{i}\nrx_bytes={i}\n"
        f"allowed_ip=10.{i >> 16}.{(i >> 8) & 255}.{i & 255}/32\n".encode()
        for i in range(count)
    )

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(7) == b"get=1\n\n"
        writer.write(b"listen_port=51820\n" + body + b"errno=0\n\n")
        await writer.drain()
        writer.close()

    client = await serve(handler)
    device = await client.get()
    assert len(device.peers) == count
    assert device.peers[-1].rx_bytes == count - 1
    assert device.peers[-1].allowed_ips == ("10.0.78.31/32",)
    assert key_to_hex(device.peers[300].public_key) == f"{300:064x}"


async def test_set_sends_the_transaction_and_accepts_errno_zero(
    serve: Callable[[Handler], Awaitable[UapiClient]],
) -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            received.append(await _read_request(reader))
        except asyncio.IncompleteReadError:
            writer.close()  # reachable() connects and leaves without a word
            return
        writer.write(b"errno=0\n\n")
        await writer.drain()
        writer.close()

    client = await serve(handler)
    assert await client.reachable()
    await client.set(peers=[PeerRemoval(KEY_A)])
    assert received == [f"set=1\npublic_key={HEX_A}\nremove=true\n\n".encode()]


async def test_set_raises_the_errno_even_when_the_daemon_hangs_up_mid_stream(
    serve: Callable[[Handler], Awaitable[UapiClient]],
) -> None:
    # Like wireguard-go: answer at the first bad line, then stop reading.
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(100)
        writer.write(b"errno=-22\n\n")
        await writer.drain()
        writer.close()

    client = await serve(handler)
    peers = [PeerUpsert(KEY_A, (f"10.{i >> 8}.{i & 255}.1/32",)) for i in range(50_000)]
    with pytest.raises(UapiErrnoError) as caught:
        await client.set(peers=peers)
    assert caught.value.errno == -22


async def test_a_daemon_that_hangs_up_without_answering_is_unavailable(
    serve: Callable[[Handler], Awaitable[UapiClient]],
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(7)
        writer.close()

    client = await serve(handler)
    with pytest.raises(UapiUnavailable, match="hung up"):
        await client.get()


async def test_a_silent_daemon_times_out(
    serve: Callable[[Handler], Awaitable[UapiClient]],
) -> None:
    release = asyncio.Event()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await release.wait()
        writer.close()

    client = await serve(handler)
    client.io_timeout = 0.1
    with pytest.raises(UapiUnavailable, match="no answer"):
        await client.get()
    release.set()


async def test_a_missing_socket_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(UapiUnavailable, match="no WireGuard socket"):
        await UapiClient(tmp_path / "none.sock").get()


async def test_a_stale_socket_is_unavailable(tmp_path: Path) -> None:
    # What a SIGKILLed daemon leaves: the file, with nobody listening.
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.bind(str(path))
    assert path.exists()
    with pytest.raises(UapiUnavailable, match="stale"):
        await UapiClient(path).set(peers=[PeerRemoval(KEY_A)])
    assert not await UapiClient(path).reachable()


# --- status reads: only what changed is parsed --------------------------------------------------


def _status_answer(count: int, *, moved: dict[int, int] | None = None, roamed: int = -1) -> bytes:
    """A get of ``count`` peers; ``moved`` peers got more bytes and a newer handshake,
    ``roamed`` changed only its endpoint."""
    moved = moved or {}
    lines = [f"private_key={PRIVATE_HEX}\nlisten_port=51820\n"]
    for i in range(count):
        extra = moved.get(i, 0)
        port = 50_000 + i + (1 if i == roamed else 0)
        lines.append(
            f"public_key={i + 1:064x}\n"
            "preshared_key=0000000000000000000000000000000000000000000000000000000000000000\n"
            "protocol_version=1\n"
            f"endpoint={CLIENT_IP}:{port}\n"
            f"last_handshake_time_sec={1_716_200_000 + extra}\n"
            "last_handshake_time_nsec=5\n"
            f"tx_bytes={1000 + extra}\n"
            f"rx_bytes={2000 + 2 * extra}\n"
            "persistent_keepalive_interval=0\n"
            f"allowed_ip=10.64.0.{i + 2}/32\n"
            f"allowed_ip=fd42:b0::{i + 2:x}/128\n"
        )
    lines.append("errno=0\n\n")
    return "".join(lines).encode()


def test_a_status_read_parses_only_the_peers_that_changed() -> None:
    memo = PeerMemo()
    first = memo.read(_status_answer(60))
    assert memo.parsed == 60
    assert first == parse_answer(_status_answer(60))

    answer = _status_answer(60, moved={3: 10, 41: 7}, roamed=20)
    second = memo.read(answer)
    # Two peers moved; one only roamed (its endpoint is not read at all); 57 stood still.
    assert memo.parsed == 2
    assert second == parse_answer(answer)
    same = [n for n in range(60) if second.peers[n] is first.peers[n]]
    assert same == [n for n in range(60) if n not in (3, 41)]
    assert second.peers[3].rx_bytes == 2020
    assert second.listen_port == 51820
    assert second.has_private_key


def test_a_status_read_converts_each_key_from_hex_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    real = uapi.key_from_hex

    def counting(value: str | bytes) -> str:
        calls.append(bytes(value, "ascii") if isinstance(value, str) else value)
        return real(value)

    monkeypatch.setattr(uapi, "key_from_hex", counting)
    memo = PeerMemo()
    memo.read(_status_answer(30))
    assert len(calls) == 30
    memo.read(_status_answer(31, moved={n: 1 for n in range(31)}))
    assert len(calls) == 31  # only the new peer's key


def test_a_status_read_keeps_no_endpoint_and_forgets_peers_that_left() -> None:
    memo = PeerMemo()
    memo.read(_status_answer(10))
    assert CLIENT_IP not in repr(vars(memo))
    device = memo.read(_status_answer(4))
    assert len(device.peers) == 4
    assert len(vars(memo)["_peers"]) == 4


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(b"listen_port=1\n\n", id="no errno line"),
        pytest.param(b"listen_port=1\nerrno=0\n", id="incomplete"),
        pytest.param(b"errno=0\n\nerrno=0\n\n", id="data after the end"),
        pytest.param(f"public_key={HEX_A}\n\nerrno=0\n\n".encode(), id="blank line inside"),
        pytest.param(b"listen_port\nerrno=0\n\n", id="line without ="),
        pytest.param(b"allowed_ip=10.0.0.1/32\nerrno=0\n\n", id="allowed_ip without a peer"),
        pytest.param(f"public_key={HEX_A[:-2]}\nerrno=0\n\n".encode(), id="short key"),
        pytest.param(
            f"public_key={HEX_A}\nrx_bytes={CLIENT_IP}\nerrno=0\n\n".encode(), id="bad number"
        ),
    ],
)
def test_a_malformed_status_answer_is_a_protocol_error(answer: bytes) -> None:
    with pytest.raises(UapiProtocolError) as caught:
        PeerMemo().read(answer)
    assert CLIENT_IP not in str(caught.value)


def test_a_status_read_raises_the_errno() -> None:
    with pytest.raises(UapiErrnoError) as caught:
        PeerMemo().read(b"errno=-5\n\n")
    assert caught.value.errno == -5


async def test_get_with_a_memo_reads_the_socket_whole(
    serve: Callable[[Handler], Awaitable[UapiClient]],
) -> None:
    answers = [_status_answer(2_000), _status_answer(2_000, moved={7: 3})]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readexactly(7) == b"get=1\n\n"
        # In small pieces, as a busy daemon writes them.
        answer = answers.pop(0)
        for start in range(0, len(answer), 4096):
            writer.write(answer[start : start + 4096])
            await writer.drain()
        writer.close()

    client = await serve(handler)
    memo = PeerMemo()
    first = await client.get(memo)
    second = await client.get(memo)
    assert len(second.peers) == 2_000
    assert memo.parsed == 1
    assert second.peers[7].tx_bytes == 1003
    assert second.peers[8] is first.peers[8]
