"""Timer trigger: remove the memberships whose time is up (rules with remove_after_days)."""

from __future__ import annotations

import azure.functions as func

from shared.app.runtime import get_runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # untyped in azure-functions


@bp.function_name("expire_memberships")
@bp.timer_trigger(arg_name="timer", schedule="0 30 3 * * *", run_on_startup=False, use_monitor=True)
def expire_memberships(timer: func.TimerRequest) -> None:
    """Once a day at 03:30 UTC; a sweep that stops half way is finished by the next."""
    get_runtime().expiry.sweep()
