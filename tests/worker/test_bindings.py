"""Guards the worker enforces at indexing, checked function by function so a failure
names the culprit: every parameter is a binding (``context`` aside) and every input
binding is a parameter; and the host sees every function the trigger modules define."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import azure.functions as func
import pytest

from devstack.functions_host import FunctionsHost
from shared.app.configuration import BINDING_SETTINGS
from shared.domain.requests import RemediationRequest
from tests.helpers import request_document

REPO = Path(__file__).resolve().parents[2]


def trigger_builders() -> dict[str, func.decorators.function_app.FunctionBuilder]:
    """Every decorated function in triggers/, by function name (nothing is called)."""
    builders = {}
    for module_info in pkgutil.iter_modules([str(REPO / "triggers")]):
        module = importlib.import_module(f"triggers.{module_info.name}")
        for value in vars(module).values():
            if isinstance(value, func.decorators.function_app.FunctionBuilder):
                function = value.build()
                builders[function.get_function_name()] = function
    return builders


FUNCTIONS = sorted(trigger_builders())


def test_the_trigger_modules_define_the_four_functions():
    assert FUNCTIONS == [
        "apply_remediation",
        "expire_memberships",
        "export_status_messages",
        "health",
    ]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_parameters_are_exactly_the_input_bindings(name):
    function = trigger_builders()[name]
    parameters = set(inspect.signature(function.get_user_function()).parameters) - {"context"}
    bindings = {b.name for b in function.get_bindings() if b.name != "$return"}
    assert parameters == bindings, f"{name}: parameters {parameters} != bindings {bindings}"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_the_worker_indexed_each_function_with_the_same_bindings(
    functions_host: FunctionsHost, name
):
    indexed = {b["name"] for b in functions_host.function(name).bindings}
    declared = {b.name for b in trigger_builders()[name].get_bindings()}
    assert indexed == declared


def test_the_settings_the_host_resolves_in_bindings_are_the_ones_health_checks(
    functions_host: FunctionsHost,
):
    """``%NAME%`` in a binding is resolved by the host, which knows no defaults: health
    names exactly these when they are unset (shared.app.configuration.BINDING_SETTINGS)."""
    referenced = {
        reference: name
        for name, function in functions_host.functions.items()
        for binding in function.bindings
        for value in binding.values()
        if isinstance(value, str)
        for reference in re.findall(r"%([^%]+)%", value)
    }
    assert referenced == BINDING_SETTINGS


def test_no_queue_message_property_shadows_the_hosts_trigger_metadata():
    """The host copies a JSON body's top-level properties into the trigger metadata,
    whose names compare without case: none of the contract's may meet the host's own."""
    host_names = {
        "queuetrigger",
        "id",
        "popreceipt",
        "dequeuecount",
        "insertiontime",
        "expirationtime",
        "nexttimevisible",
        "nextvisibletime",
        "sys",
    }
    contract = {
        (field.alias or name).lower() for name, field in RemediationRequest.model_fields.items()
    }
    assert set(request_document()) <= {*contract, "schema_version"}
    assert contract & host_names == set()
