"""The IKEv2 profiles against what their importers document.

- ``.mobileconfig``: parsed as a property list and checked key by key against Apple's
  documented profile keys (apple/device-management ``mdm/profiles``: TopLevel.yaml,
  CommonPayloadKeys.yaml, com.apple.security.root.yaml, com.apple.vpn.managed.yaml), with
  their types, allowed values and required keys.
- ``.sswan``: parsed as JSON and checked against the fields the strongSwan app's importer
  reads (``VpnProfileImportActivity.parseProfile``), with their types and required ones.
- All of them: the proposals are ones the node offers, and none is weak.
"""

from __future__ import annotations

import base64
import datetime
import json
import plistlib
import re
import uuid
from typing import Any

import pytest
from cryptography import x509

from burrow.control.devices.ikev2_profiles import (
    APPLE_SA_PARAMETERS,
    SSWAN_ESP_PROPOSAL,
    SSWAN_IKE_PROPOSAL,
    WINDOWS_IPSEC,
    Ikev2ProfileValues,
    render_mobileconfig,
    render_sswan,
    render_windows_settings,
)
from burrow.node.drivers.ikev2 import ESP_PROPOSALS, IKE_PROPOSALS
from tests.node.drivers.ikev2_lab import make_pki

# Apple's documented keys: name -> (type, allowed values or None, required).
Spec = dict[str, tuple[type | tuple[type, ...], tuple[Any, ...] | None, bool]]
_STR, _INT, _BOOL, _DATA, _DICT, _LIST = str, int, bool, bytes, dict, list
TOP_LEVEL: Spec = {
    "PayloadIdentifier": (_STR, None, True),
    "PayloadUUID": (_STR, None, True),
    "PayloadType": (_STR, ("Configuration",), True),
    "PayloadVersion": (_INT, (1,), True),
    "PayloadContent": (_LIST, None, True),
    "PayloadDescription": (_STR, None, False),
    "PayloadDisplayName": (_STR, None, False),
    "PayloadOrganization": (_STR, None, False),
    "PayloadRemovalDisallowed": (_BOOL, None, False),
    "PayloadScope": (_STR, ("System", "User"), False),
    "ConsentText": (_DICT, None, False),
}
COMMON_PAYLOAD: Spec = {
    "PayloadType": (_STR, None, True),
    "PayloadVersion": (_INT, (1,), True),
    "PayloadIdentifier": (_STR, None, True),
    "PayloadUUID": (_STR, None, True),
    "PayloadDisplayName": (_STR, None, False),
    "PayloadDescription": (_STR, None, False),
    "PayloadOrganization": (_STR, None, False),
}
ROOT_PAYLOAD: Spec = {
    "PayloadCertificateFileName": (_STR, None, False),
    "PayloadContent": (_DATA, None, True),
}
VPN_PAYLOAD: Spec = {
    "VPNType": (_STR, ("VPN", "L2TP", "IPSec", "IKEv2", "AlwaysOn", "TransparentProxy"), True),
    "VPNSubType": (_STR, None, False),
    "UserDefinedName": (_STR, None, True),
    "IKEv2": (_DICT, None, False),
    "DNS": (_DICT, None, False),
}
_BIT = (0, 1)
IKEV2: Spec = {
    "RemoteAddress": (_STR, None, True),
    "LocalIdentifier": (_STR, None, True),
    "RemoteIdentifier": (_STR, None, True),
    "AuthenticationMethod": (_STR, ("None", "SharedSecret", "Certificate"), True),
    "ExtendedAuthEnabled": (_INT, _BIT, False),
    "AuthName": (_STR, None, False),
    "AuthPassword": (_STR, None, False),
    "DeadPeerDetectionRate": (_STR, ("None", "Low", "Medium", "High"), False),
    "ServerCertificateIssuerCommonName": (_STR, None, False),
    "ServerCertificateCommonName": (_STR, None, False),
    "UseConfigurationAttributeInternalIPSubnet": (_INT, _BIT, False),
    "DisableMOBIKE": (_INT, _BIT, False),
    "DisableRedirect": (_INT, _BIT, False),
    "EnablePFS": (_INT, _BIT, False),
    "EnableCertificateRevocationCheck": (_INT, _BIT, False),
    "MTU": (_INT, None, False),
    "EnforceStrictAlgorithmSelection": (_INT, _BIT, False),
    "IKESecurityAssociationParameters": (_DICT, None, False),
    "ChildSecurityAssociationParameters": (_DICT, None, False),
}
SA_PARAMETERS: Spec = {
    "EncryptionAlgorithm": (
        _STR,
        ("DES", "3DES", "AES-128", "AES-256", "AES-128-GCM", "AES-256-GCM", "ChaCha20Poly1305"),
        False,
    ),
    "IntegrityAlgorithm": (
        _STR,
        ("SHA1-96", "SHA1-160", "SHA2-256", "SHA2-384", "SHA2-512"),
        False,
    ),
    "DiffieHellmanGroup": (_INT, (1, 2, 5, 14, 15, 16, 17, 18, 19, 20, 21, 31, 32), False),
    "LifeTimeInMinutes": (_INT, tuple(range(10, 1441)), False),
}
WEAK_APPLE = {"DES", "3DES", "SHA1-96", "SHA1-160", 1, 2, 5}

# The strongSwan app's importer: field -> (type, required). Anything else it ignores, which
# would silently drop a setting, so the test refuses unknown fields too.
SSWAN_TOP = {
    "uuid": (str, True),
    "name": (str, True),
    "type": (str, True),
    "remote": (dict, True),
    "local": (dict, False),
    "ike-proposal": (str, False),
    "esp-proposal": (str, False),
    "mtu": (int, False),
    "nat-keepalive": (int, False),
    "split-tunneling": (dict, False),
    "apps": (list, False),
    "excluded-apps": (list, False),
}
SSWAN_REMOTE = {
    "addr": (str, True),
    "port": (int, False),
    "id": (str, False),
    "cert": (str, False),
    "certreq": (bool, False),
}
SSWAN_LOCAL = {"eap_id": (str, False), "id": (str, False), "p12": (str, False)}
SSWAN_TYPES = {
    "ikev2-eap",
    "ikev2-cert",
    "ikev2-cert-eap",
    "ikev2-eap-tls",
    "ikev2-byod-eap",
}


def _check(where: str, data: dict[str, Any], spec: Spec, *, extra: Spec | None = None) -> None:
    allowed = {**spec, **(extra or {})}
    for key, value in data.items():
        assert key in allowed, f"{where}: {key} is not a documented key"
        kind, values, _ = allowed[key]
        # plistlib reads <true/> as bool, which is an int too: keep integer keys integers.
        assert isinstance(value, kind), f"{where}.{key}: {type(value).__name__}"
        assert not (kind is _INT and isinstance(value, bool)), f"{where}.{key} is a boolean"
        if values is not None:
            assert value in values, f"{where}.{key}: {value!r} is not an allowed value"
    for key, (_, _, required) in allowed.items():
        assert not required or key in data, f"{where}: required {key} missing"


@pytest.fixture(scope="module")
def values() -> Ikev2ProfileValues:
    pki = make_pki("vpn1.example.net")
    return Ikev2ProfileValues(
        provider="Burrow VPN",
        node_name="ams-1",
        host="vpn1.example.net",
        ca_pem=pki.ca_pem,
        username="d7k2m9q4x1",
        device_name="Ana's iPhone",
    )


def test_mobileconfig_has_only_apples_documented_keys(values: Ikev2ProfileValues) -> None:
    profile = plistlib.loads(render_mobileconfig(values), fmt=plistlib.FMT_XML)
    _check("profile", profile, TOP_LEVEL)
    ca_payload, vpn_payload = profile["PayloadContent"]
    _check("ca", ca_payload, COMMON_PAYLOAD, extra=ROOT_PAYLOAD)
    assert ca_payload["PayloadType"] == "com.apple.security.root"
    _check("vpn", vpn_payload, COMMON_PAYLOAD, extra=VPN_PAYLOAD)
    assert vpn_payload["PayloadType"] == "com.apple.vpn.managed"
    assert vpn_payload["VPNType"] == "IKEv2"
    ikev2 = vpn_payload["IKEv2"]
    _check("IKEv2", ikev2, IKEV2)
    for name in ("IKESecurityAssociationParameters", "ChildSecurityAssociationParameters"):
        _check(name, ikev2[name], SA_PARAMETERS)
        # Explicit, and strong: no 3DES, no SHA-1, no DH group below 14.
        assert set(ikev2[name]) >= {
            "EncryptionAlgorithm",
            "IntegrityAlgorithm",
            "DiffieHellmanGroup",
        }
        assert not WEAK_APPLE & set(ikev2[name].values())
    # Every UUID is a UUID, every identifier distinct.
    for payload in (profile, ca_payload, vpn_payload):
        uuid.UUID(payload["PayloadUUID"])
    identifiers = [p["PayloadIdentifier"] for p in (profile, ca_payload, vpn_payload)]
    assert len(set(identifiers)) == 3


def test_mobileconfig_carries_the_nodes_ca_and_names_the_node(values: Ikev2ProfileValues) -> None:
    profile = plistlib.loads(render_mobileconfig(values))
    ca_payload, vpn_payload = profile["PayloadContent"]
    ca = x509.load_der_x509_certificate(ca_payload["PayloadContent"])
    assert ca == values.ca
    ikev2 = vpn_payload["IKEv2"]
    assert ikev2["RemoteAddress"] == ikev2["RemoteIdentifier"] == "vpn1.example.net"
    assert ikev2["LocalIdentifier"] == ikev2["AuthName"] == "d7k2m9q4x1"
    assert ikev2["AuthenticationMethod"] == "None"
    assert ikev2["ExtendedAuthEnabled"] == 1
    assert ikev2["ServerCertificateIssuerCommonName"] == "burrow test CA"
    # No secret in the file: the device asks for it.
    assert "AuthPassword" not in ikev2
    # The same device and node give the same UUIDs (a reinstall replaces, not duplicates).
    assert render_mobileconfig(values) == render_mobileconfig(values)


def test_sswan_has_only_the_apps_documented_fields(values: Ikev2ProfileValues) -> None:
    profile = json.loads(render_sswan(values))
    for spec, data in ((SSWAN_TOP, profile), (SSWAN_REMOTE, profile["remote"]),
                       (SSWAN_LOCAL, profile["local"])):  # fmt: skip
        for key, value in data.items():
            assert key in spec, f"{key} is not a field the strongSwan app reads"
            assert isinstance(value, spec[key][0])
        for key, (_, required) in spec.items():
            assert not required or key in data, f"required {key} missing"
    uuid.UUID(profile["uuid"])
    assert profile["type"] in SSWAN_TYPES
    assert profile["type"] == "ikev2-eap"
    assert profile["remote"]["addr"] == profile["remote"]["id"] == "vpn1.example.net"
    assert profile["local"] == {"eap_id": "d7k2m9q4x1"}
    cert = x509.load_der_x509_certificate(base64.b64decode(profile["remote"]["cert"]))
    assert cert == values.ca
    assert cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC)


_PROPOSAL = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)+$")


def test_every_profiles_proposals_are_offered_by_the_node() -> None:
    assert _PROPOSAL.match(SSWAN_IKE_PROPOSAL)
    assert SSWAN_IKE_PROPOSAL in IKE_PROPOSALS
    assert SSWAN_ESP_PROPOSAL in ESP_PROPOSALS
    # Apple's and Windows' choice, spelled the strongSwan way, is the same proposal.
    apple = APPLE_SA_PARAMETERS
    assert (apple["EncryptionAlgorithm"], apple["IntegrityAlgorithm"]) == (
        "AES-256-GCM",
        "SHA2-384",
    )
    assert apple["DiffieHellmanGroup"] == 20  # ecp384
    assert (WINDOWS_IPSEC["CipherTransformConstants"], WINDOWS_IPSEC["DHGroup"]) == (
        "GCMAES256",
        "ECP384",
    )
    assert "aes256gcm16-prfsha384-ecp384" in IKE_PROPOSALS
    assert "aes256gcm16-ecp384" in ESP_PROPOSALS
    for proposal in (*IKE_PROPOSALS, *ESP_PROPOSALS):
        assert "3des" not in proposal
        assert "modp1024" not in proposal
        assert "md5" not in proposal


def test_windows_settings_name_the_host_ca_and_strong_proposals(
    values: Ikev2ProfileValues,
) -> None:
    text = render_windows_settings(values)
    assert "-ServerAddress 'vpn1.example.net'" in text
    assert "-TunnelType Ikev2 -AuthenticationMethod Eap" in text
    assert "Cert:\\LocalMachine\\Root" in text
    assert "-DHGroup ECP384" in text
    assert "-CipherTransformConstants GCMAES256" in text
    assert "Burrow VPN ams-1" in text
