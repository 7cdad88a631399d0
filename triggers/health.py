"""HTTP trigger: the status figures and every dependency check, for monitoring."""

from __future__ import annotations

import json

import azure.functions as func

from shared.app.health import health_report

bp = func.Blueprint()  # type: ignore[no-untyped-call]  # untyped in azure-functions


@bp.function_name("health")
@bp.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
def health(req: func.HttpRequest) -> func.HttpResponse:
    """200 with the figures when healthy; 503 naming what is down or misconfigured.

    ``req`` carries nothing we read; the worker requires the parameter to be named as
    the trigger binding (``route``'s default, ``req``).
    """
    status, body = health_report()
    return func.HttpResponse(json.dumps(body), status_code=status, mimetype="application/json")
