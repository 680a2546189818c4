"""The node's OpenVPN PKI: what it makes, that OpenSSL accepts it, and that it stays root's."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from burrow.node.pki import (
    SERVER_FILE,
    PkiError,
    certificate_names,
    ensure_pki,
    ensure_server_for,
    is_tls_crypt_key,
    load_pki,
    make_pki,
    pki_path,
    save_pki,
)


def test_server_certificate_is_issued_by_the_node_ca_for_its_name(tmp_path: Path) -> None:
    pki = make_pki("ams-1", "vpn.example.net")
    ca = x509.load_pem_x509_certificate(pki.ca_certificate.encode())
    server = x509.load_pem_x509_certificate(pki.server_certificate.encode())
    server.verify_directly_issued_by(ca)
    assert pki.server_names == ["vpn.example.net"]
    usage = server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in usage
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    # OpenSSL itself agrees, as OpenVPN's TLS will.
    (tmp_path / "ca.pem").write_text(pki.ca_certificate)
    (tmp_path / "server.pem").write_text(pki.server_certificate)
    done = subprocess.run(
        ["openssl", "verify", "-purpose", "sslserver", "-CAfile", "ca.pem", "server.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert is_tls_crypt_key(pki.tls_crypt_key)
    assert "PRIVATE" not in repr(pki)
    assert pki.tls_crypt_key not in repr(pki)


def test_an_address_goes_into_the_san_as_an_address() -> None:
    pki = make_pki("fra-1", "192.0.2.7")
    server = x509.load_pem_x509_certificate(pki.server_certificate.encode())
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["192.0.2.7"]


def test_openvpn_reads_the_tls_crypt_key(tmp_path: Path) -> None:
    """openvpn's own key generator writes the format ours has (a real openvpn using ours is
    the end-to-end test's business)."""
    theirs = tmp_path / "theirs.key"
    subprocess.run(["openvpn", "--genkey", "tls-crypt", str(theirs)], check=True)
    assert is_tls_crypt_key(theirs.read_text())


def test_kept_root_only_and_made_once(tmp_path: Path) -> None:
    state = tmp_path / "state"
    first = ensure_pki(state, "ams-1", "vpn.example.net")
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(pki_path(state)).st_mode) == 0o600
    again = ensure_pki(state, "ams-1", "vpn.example.net")
    assert again == first
    os.chmod(pki_path(state), 0o644)
    with pytest.raises(PkiError, match="readable by others"):
        load_pki(state)


def test_a_damaged_file_is_refused_with_its_path(tmp_path: Path) -> None:
    pki = make_pki("ams-1", "vpn.example.net")
    path = save_pki(tmp_path, pki)
    path.write_text('{"ca_certificate": "nonsense"}')
    with pytest.raises(PkiError, match=str(path)):
        load_pki(tmp_path)


def test_a_server_certificate_for_another_name_comes_from_the_same_ca(tmp_path: Path) -> None:
    """IKEv2 may be served under a name the PKI was not made for (it was made at enrollment,
    for the endpoint): the node's CA signs one for that name, kept, and made again only when
    the name changes."""
    pki = ensure_pki(tmp_path, "ams-1", "vpn.example.net")
    assert ensure_server_for(tmp_path, pki, "VPN.example.net.") == pki  # the same name
    ike = ensure_server_for(tmp_path, pki, "ike.example.net")
    assert certificate_names(ike.server_certificate) == ["ike.example.net"]
    assert ike.ca_certificate == pki.ca_certificate
    ca = x509.load_pem_x509_certificate(pki.ca_certificate.encode())
    x509.load_pem_x509_certificate(ike.server_certificate.encode()).verify_directly_issued_by(ca)
    assert stat.S_IMODE((tmp_path / SERVER_FILE).stat().st_mode) == 0o600
    assert load_pki(tmp_path) == pki  # OpenVPN's certificate and the CA are untouched
    assert ensure_server_for(tmp_path, pki, "ike.example.net") == ike

    moved = ensure_server_for(tmp_path, pki, "2001:db8::7")
    assert certificate_names(moved.server_certificate) == ["2001:db8::7"]
    # A kept certificate another CA signed (a PKI made again) is not served.
    other = make_pki("ams-1", "x.example.net")
    remade = ensure_server_for(tmp_path, other, "2001:db8::7")
    assert remade.server_certificate != moved.server_certificate
    new_ca = x509.load_pem_x509_certificate(other.ca_certificate.encode())
    served = x509.load_pem_x509_certificate(remade.server_certificate.encode())
    served.verify_directly_issued_by(new_ca)
