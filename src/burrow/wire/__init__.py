"""The node API contract: the only thing the control plane and the node agent share.

Pydantic models only; this package imports nothing else of burrow.
"""

from burrow.wire.credentials import check_openvpn_secret, openvpn_verifier
from burrow.wire.models import (
    API_PREFIX,
    CREDENTIAL_PROTOCOLS,
    WIREGUARD,
    BlockedConnection,
    CredentialSpec,
    DeltaState,
    DesiredState,
    DnsSpec,
    EnrollRequest,
    EnrollResponse,
    FairUseSpec,
    FilterListSpec,
    FullState,
    NetworkSpec,
    NodeReport,
    PeerSpec,
    PeerStatus,
    ProtocolLimit,
    ReportAck,
    ResolverSpec,
    StateUpdate,
    is_valid_wg_key,
)

__all__ = [
    "API_PREFIX",
    "CREDENTIAL_PROTOCOLS",
    "WIREGUARD",
    "BlockedConnection",
    "CredentialSpec",
    "DeltaState",
    "DesiredState",
    "DnsSpec",
    "EnrollRequest",
    "EnrollResponse",
    "FairUseSpec",
    "FilterListSpec",
    "FullState",
    "NetworkSpec",
    "NodeReport",
    "PeerSpec",
    "PeerStatus",
    "ProtocolLimit",
    "ReportAck",
    "ResolverSpec",
    "StateUpdate",
    "check_openvpn_secret",
    "is_valid_wg_key",
    "openvpn_verifier",
]
