"""The node API contract: the only thing the control plane and the node agent share.

Pydantic models only; this package imports nothing else of burrow.
"""

from burrow.wire.models import (
    API_PREFIX,
    DeltaState,
    DesiredState,
    DnsSpec,
    EnrollRequest,
    EnrollResponse,
    FairUseSpec,
    FilterListSpec,
    FullState,
    NatSpec,
    NetworkSpec,
    NodeReport,
    PeerSpec,
    PeerStatus,
    ReportAck,
    ResolverSpec,
    StateUpdate,
    is_valid_wg_key,
)

__all__ = [
    "API_PREFIX",
    "DeltaState",
    "DesiredState",
    "DnsSpec",
    "EnrollRequest",
    "EnrollResponse",
    "FairUseSpec",
    "FilterListSpec",
    "FullState",
    "NatSpec",
    "NetworkSpec",
    "NodeReport",
    "PeerSpec",
    "PeerStatus",
    "ReportAck",
    "ResolverSpec",
    "StateUpdate",
    "is_valid_wg_key",
]
