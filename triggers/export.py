"""Timer trigger: export new 39997 status messages onto the remediation queue."""

from __future__ import annotations

import logging

import azure.functions as func

from shared.app.runtime import get_runtime

log = logging.getLogger("cmremediate.export")

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # untyped in azure-functions


@bp.function_name("export_status_messages")
@bp.timer_trigger(
    arg_name="timer", schedule="%EXPORT_SCHEDULE%", run_on_startup=False, use_monitor=True
)
def export_status_messages(timer: func.TimerRequest) -> None:
    """Read → enqueue → checkpoint. Raising lets the host log the run as failed."""
    if timer.past_due:
        log.warning("export timer is past due; running now")
    get_runtime().export_function.run()
