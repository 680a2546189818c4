"""Plan endpoints: the public price list and the administrators' full list."""

from __future__ import annotations

from fastapi import APIRouter

from burrow.control.deps import CurrentAdmin, SessionDep
from burrow.control.plans.schemas import AdminPlanOut, PlanOut
from burrow.control.plans.service import plan as plan_service
from burrow.control.problems import problem_responses

public_router = APIRouter(prefix="/api/v1/plans", tags=["plans"])
admin_router = APIRouter(prefix="/api/v1/admin/plans", tags=["admin"])


@public_router.get(
    "",
    summary="The plans on offer",
    response_model=list[PlanOut],
)
async def list_plans(session: SessionDep) -> list[PlanOut]:
    """Every plan a customer can choose now. No sign-in needed."""
    plans = await plan_service.list_active(session)
    return [PlanOut.model_validate(plan) for plan in plans]


@admin_router.get(
    "",
    summary="Every plan, retired ones included",
    response_model=list[AdminPlanOut],
    responses=problem_responses(401, 403),
)
async def list_all_plans(session: SessionDep, _admin: CurrentAdmin) -> list[AdminPlanOut]:
    """Plans that left the policy file are kept, with ``retired_at`` set."""
    plans = await plan_service.list_all(session)
    return [AdminPlanOut.model_validate(plan) for plan in plans]


router = APIRouter()
router.include_router(public_router)
router.include_router(admin_router)
