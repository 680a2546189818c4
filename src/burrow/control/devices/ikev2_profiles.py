"""IKEv2 profiles a customer imports unchanged: Apple ``.mobileconfig``, strongSwan ``.sswan``,
and the plain settings for Windows' built-in client.

Every profile names the node's CA (made at the node's enrollment) and explicit strong
proposals: old Apple defaults are 3DES with Diffie-Hellman group 2, so nothing is left to a
client's defaults. The proposals match the node's (``node.drivers.ikev2``); both sides are
kept equal by ``tests/control/devices/test_ikev2_profiles.py``.

No profile carries the device's secret: it is shown once when it is made, and the phone or
laptop asks for it when the profile is installed. The node picks the device's connection by
the EAP-MSCHAPv2 username, whatever the IKE identity: Apple and the strongSwan app send the
username (Apple ``LocalIdentifier``), Windows' built-in client its own IP address
(``node.drivers.ikev2``'s gate).

Pure functions, no I/O; imports ``cryptography`` for the CA's DER form and names.
"""

from __future__ import annotations

import base64
import json
import plistlib
import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

# One choice for every client that lets us choose: AES-256-GCM, PRF SHA-384, ECP-384 (group 20).
APPLE_SA_PARAMETERS = {
    "EncryptionAlgorithm": "AES-256-GCM",
    "IntegrityAlgorithm": "SHA2-384",
    "DiffieHellmanGroup": 20,
    "LifeTimeInMinutes": 1440,
}
SSWAN_IKE_PROPOSAL = "aes256gcm16-prfsha384-ecp384"
SSWAN_ESP_PROPOSAL = "aes256gcm16-ecp384"
# The same for Windows (Set-VpnConnectionIPsecConfiguration's names).
WINDOWS_IPSEC = {
    "AuthenticationTransformConstants": "GCMAES256",
    "CipherTransformConstants": "GCMAES256",
    "EncryptionMethod": "GCMAES256",
    "IntegrityCheckMethod": "SHA384",
    "DHGroup": "ECP384",
    "PfsGroup": "ECP384",
}
# A stable namespace for the profiles' UUIDs: the same device on the same node always gets the
# same identifiers, so installing a profile again replaces the old one instead of adding one.
_UUID_NAMESPACE = uuid.UUID("6f0f4e3c-5a43-4a4e-9d1f-2b9c0c7b1d15")


@dataclass(frozen=True, slots=True)
class Ikev2ProfileValues:
    """What every IKEv2 profile of one device on one node says."""

    provider: str
    node_name: str
    host: str
    ca_pem: str
    username: str
    device_name: str

    @property
    def connection_name(self) -> str:
        return f"{self.provider} {self.node_name}"

    @property
    def ca(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.ca_pem.encode())

    @property
    def ca_common_name(self) -> str:
        names = self.ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else ""

    def uuid(self, part: str) -> str:
        return str(uuid.uuid5(_UUID_NAMESPACE, f"{self.host}/{self.username}/{part}")).upper()

    @property
    def identifier(self) -> str:
        labels = [label for label in reversed(self.host.lower().split(".")) if label]
        return ".".join([*labels, "ikev2", self.username])


def _ca_der(values: Ikev2ProfileValues) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return values.ca.public_bytes(Encoding.DER)


def render_mobileconfig(values: Ikev2ProfileValues) -> bytes:
    """An unsigned configuration profile: the node's CA and one IKEv2 VPN (EAP-MSCHAPv2)."""
    ca_payload = {
        "PayloadType": "com.apple.security.root",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{values.identifier}.ca",
        "PayloadUUID": values.uuid("ca"),
        "PayloadDisplayName": values.ca_common_name or f"{values.node_name} CA",
        "PayloadCertificateFileName": f"{values.node_name}-ca.cer",
        "PayloadContent": _ca_der(values),
    }
    vpn_payload = {
        "PayloadType": "com.apple.vpn.managed",
        "PayloadVersion": 1,
        "PayloadIdentifier": f"{values.identifier}.vpn",
        "PayloadUUID": values.uuid("vpn"),
        "PayloadDisplayName": values.connection_name,
        "UserDefinedName": values.connection_name,
        "VPNType": "IKEv2",
        "IKEv2": {
            "RemoteAddress": values.host,
            "RemoteIdentifier": values.host,
            "LocalIdentifier": values.username,
            # EAP with the server authenticated by its certificate, checked against the CA above.
            "AuthenticationMethod": "None",
            "ExtendedAuthEnabled": 1,
            "AuthName": values.username,
            "ServerCertificateIssuerCommonName": values.ca_common_name,
            "ServerCertificateCommonName": values.host,
            "IKESecurityAssociationParameters": dict(APPLE_SA_PARAMETERS),
            "ChildSecurityAssociationParameters": dict(APPLE_SA_PARAMETERS),
            "EnablePFS": 1,
            "DeadPeerDetectionRate": "Medium",
            "DisableMOBIKE": 0,
            "DisableRedirect": 1,
            "UseConfigurationAttributeInternalIPSubnet": 0,
            "EnforceStrictAlgorithmSelection": 1,
        },
    }
    profile = {
        "PayloadType": "Configuration",
        "PayloadVersion": 1,
        "PayloadIdentifier": values.identifier,
        "PayloadUUID": values.uuid("profile"),
        "PayloadDisplayName": f"{values.connection_name} (IKEv2)",
        "PayloadDescription": (
            f"IKEv2 VPN to {values.host} for {values.device_name}. "
            "You will be asked for the device's IKEv2 password."
        ),
        "PayloadOrganization": values.provider,
        "PayloadContent": [ca_payload, vpn_payload],
    }
    return plistlib.dumps(profile, fmt=plistlib.FMT_XML, sort_keys=False)


def render_sswan(values: Ikev2ProfileValues) -> bytes:
    """A profile for the strongSwan app on Android (its ``.sswan`` import format)."""
    profile = {
        "uuid": values.uuid("sswan").lower(),
        "name": values.connection_name,
        "type": "ikev2-eap",
        "remote": {
            "addr": values.host,
            "id": values.host,
            "cert": base64.b64encode(_ca_der(values)).decode(),
        },
        "local": {"eap_id": values.username},
        "ike-proposal": SSWAN_IKE_PROPOSAL,
        "esp-proposal": SSWAN_ESP_PROPOSAL,
    }
    return (json.dumps(profile, indent=2) + "\n").encode()


def render_windows_settings(values: Ikev2ProfileValues) -> str:
    """PowerShell lines for Windows' built-in client, with the CA saved as ``<node>-ca.cer``."""
    name = values.connection_name.replace("'", "''")
    ipsec = " ".join(f"-{key} {value}" for key, value in WINDOWS_IPSEC.items())
    return "\n".join(
        [
            f"# IKEv2 to {values.host} for {values.device_name}; run in an administrator "
            "PowerShell.",
            f"# Username: {values.username}   Password: the device's IKEv2 password.",
            f"Import-Certificate -FilePath '{values.node_name}-ca.cer' "
            "-CertStoreLocation Cert:\\LocalMachine\\Root",
            f"Add-VpnConnection -Name '{name}' -ServerAddress '{values.host}' "
            "-TunnelType Ikev2 -AuthenticationMethod Eap -EncryptionLevel Required "
            "-RememberCredential",
            f"Set-VpnConnectionIPsecConfiguration -ConnectionName '{name}' {ipsec} -Force",
            "",
        ]
    )
