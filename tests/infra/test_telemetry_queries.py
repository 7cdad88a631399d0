"""The workbook and the alert rules query only what the code emits: every metric name
in the catalogue (shared/platform/telemetry.py), every dimension one of that metric's
attributes, every log field one the remediator writes; and every metric is shown."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from shared.domain.requests import RemediationRequest
from shared.platform.telemetry import SPECS
from tests.infra.bicep import INFRA

WORKBOOK = json.loads((INFRA / "workbook.json").read_text(encoding="utf-8"))
ALERTS: list[dict[str, Any]] = json.loads((INFRA / "alerts.json").read_text(encoding="utf-8"))


def _log_fields() -> set[str]:
    """The attributes of a log line about a request (the remediator adds ``outcome``)."""
    request = RemediationRequest.model_construct(
        site_code="PS1", record_id=1, machine_name="PC01", rule="r", collection_id="PS100123"
    )
    return {*request.log_attributes(), "outcome"}


def _queries() -> dict[str, str]:
    found = {
        f"workbook:{item['name']}": item["content"]["query"]
        for item in WORKBOOK["items"]
        if item["type"] == 3
    }
    found.update({f"alert:{alert['name']}": alert["query"] for alert in ALERTS})
    return found


QUERIES = _queries()


def _metric_names(query: str) -> set[str]:
    names = set(re.findall(r'name\s*==\s*"([^"]+)"', query))
    for group in re.findall(r"name\s+in\s*\(([^)]*)\)", query):
        names |= set(re.findall(r'"([^"]+)"', group))
    return names


@pytest.mark.parametrize("where", sorted(QUERIES))
def test_every_query_names_what_the_code_emits(where: str) -> None:
    query = QUERIES[where]
    table = query.split("\n", 1)[0].strip()
    dimensions = set(re.findall(r"customDimensions\.(\w+)", query))
    if table == "customMetrics":
        names = _metric_names(query)
        assert names, f"{where}: a metrics query must name its metric"
        unknown = names - set(SPECS)
        assert not unknown, f"{where}: no such metric in the code: {unknown}"
        allowed = {a for name in names for a in SPECS[name].attributes}
        assert dimensions <= allowed, f"{where}: {dimensions - allowed} are not attributes"
    else:
        assert table == "traces", f"{where}: queries read customMetrics or traces"
        assert dimensions <= _log_fields(), f"{where}: {dimensions - _log_fields()}"


def test_every_metric_is_on_the_workbook() -> None:
    shown = set().union(*(_metric_names(q) for w, q in QUERIES.items() if w.startswith("workbook")))
    assert shown == set(SPECS)


def test_the_alerts_the_operators_need_are_there() -> None:
    assert {a["name"] for a in ALERTS} == {
        "poison-not-empty",
        "export-lag",
        "no-export-run",
        "held-adds",
        "sign-in-refused",
    }
    for alert in ALERTS:
        # the measured column is what the query summarizes
        assert re.search(rf"summarize\s+{alert['measure']}\s*=", alert["query"]), alert["name"]
        assert alert["operator"] in {"GreaterThan", "LessThan"}
        assert alert["timeAggregation"] in {"Maximum", "Total"}
        assert re.fullmatch(r"PT\d+[MH]", alert["windowSize"])
    lag = next(a for a in ALERTS if a["name"] == "export-lag")
    assert lag["threshold"] == 30 * 60 and SPECS["cmremediate.export.lag"].unit == "s"


def test_the_alert_module_reads_both_files() -> None:
    module = (INFRA / "modules" / "alerts.bicep").read_text(encoding="utf-8")
    assert "loadJsonContent('../alerts.json')" in module
    assert "loadTextContent('../workbook.json')" in module
