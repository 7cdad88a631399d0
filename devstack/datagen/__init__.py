"""Realistic ConfigMgr status messages and discovery records, with ground truth.

Everything is deterministic for a seed and built from ``random.Random(seed)`` only.
The ground truth is set *by construction*: a message generated as "matches rule X"
carries ``expected_rules={X}``, a machine generated as "re-imaged" carries the
ResourceID of its new record in ``Workload.expected_resolution``. Nothing here runs a
matcher or a resolver to label data, so tests can hold the production code to it.

Typical use::

    workload = generate_workload(seed=1)
    with SiteDatabase() as db:          # devstack.sitedb
        record_ids = db.load_workload(workload)

The modules, in the order a workload is made:

- ``model``: ConfigMgr's constants, the generated records, ``Workload``, the rules;
- ``catalog``: the hand-written tables (hostile strings, device scenarios, kinds);
- ``builder``: ``WorkloadBuilder``, which turns the tables into labelled records;
- ``scenarios``: ``generate_workload()`` and ``m365_demo_scenario()`` with their mixes.
"""

from devstack.datagen.catalog import (
    DEVICE_SCENARIOS,
    HOSTILE_MACHINE_NAMES,
    HOSTILE_STRINGS,
    MATCHING_KINDS,
    NON_MATCHING_KINDS,
)
from devstack.datagen.model import (
    DEFAULT_START,
    GENERIC_ERROR,
    GENERIC_INFO,
    GENERIC_MESSAGE_IDS,
    GENERIC_WARNING,
    M365_RULES,
    RECORD_ID_RANGE,
    SEVERITY_ERROR,
    SEVERITY_INFO,
    SEVERITY_WARNING,
    GeneratedDevice,
    GeneratedStatusMessage,
    RuleDict,
    Workload,
    default_severity,
    site_record_id_base,
)
from devstack.datagen.scenarios import WORKLOAD_MIX, generate_workload, m365_demo_scenario

__all__ = [
    "DEFAULT_START",
    "DEVICE_SCENARIOS",
    "GENERIC_ERROR",
    "GENERIC_INFO",
    "GENERIC_MESSAGE_IDS",
    "GENERIC_WARNING",
    "HOSTILE_MACHINE_NAMES",
    "HOSTILE_STRINGS",
    "M365_RULES",
    "MATCHING_KINDS",
    "NON_MATCHING_KINDS",
    "RECORD_ID_RANGE",
    "SEVERITY_ERROR",
    "SEVERITY_INFO",
    "SEVERITY_WARNING",
    "WORKLOAD_MIX",
    "GeneratedDevice",
    "GeneratedStatusMessage",
    "RuleDict",
    "Workload",
    "default_severity",
    "generate_workload",
    "m365_demo_scenario",
    "site_record_id_base",
]
