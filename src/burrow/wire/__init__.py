"""The node API contract: the only thing the control plane and the node agent share.

Pydantic models only; this package imports nothing else of burrow.
"""

from burrow.wire.models import (
    API_PREFIX,
    DeltaState,
    DesiredState,
    EnrollRequest,
    EnrollResponse,
    FairUseSpec,
    FullState,
    NetworkSpec,
    NodeReport,
    PeerSpec,
    PeerStatus,
    ReportAck,
    StateUpdate,
    is_valid_wg_key,
)

__all__ = [
    "API_PREFIX",
    "DeltaState",
    "DesiredState",
    "EnrollRequest",
    "EnrollResponse",
    "FairUseSpec",
    "FullState",
    "NetworkSpec",
    "NodeReport",
    "PeerSpec",
    "PeerStatus",
    "ReportAck",
    "StateUpdate",
    "is_valid_wg_key",
]
