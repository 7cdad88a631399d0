"""Queue trigger: one remediation request → one recorded outcome."""

from __future__ import annotations

import azure.functions as func

from shared.app.runtime import get_runtime

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # untyped in azure-functions


@bp.function_name("apply_remediation")
@bp.queue_trigger(
    arg_name="message", queue_name="%REMEDIATION_QUEUE%", connection="AzureWebJobsStorage"
)
def apply_remediation(message: func.QueueMessage) -> None:
    """Decide and record; raising lets the host retry. A failing last attempt is parked
    in the poison queue by the core, where it does not expire."""
    get_runtime().queue_function.handle(
        message.get_body(), message_id=message.id, dequeue_count=message.dequeue_count
    )
