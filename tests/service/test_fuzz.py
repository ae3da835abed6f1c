"""Schema fuzzing: schemathesis sends generated requests to every operation in the
service's own OpenAPI schema, in process (ASGI), against the session's tiny model.

What it checks: no 5xx for anything a client can send, every answer matches the schema
the route documents (the one error format included) and its declared content type.
Bounded: a fixed number of examples per operation and no Hypothesis database, so a run
is repeatable and takes about half a minute on 2 cores.
"""

from __future__ import annotations

import warnings

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from service.app import create_app
from service.settings import Settings

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def service_schema(tiny_models_dir):
    """The schema of an app serving the tiny model (loaded here: no lifespan in-process)."""
    app = create_app(Settings(models_dir=tiny_models_dir, reload_interval_s=0, api_key=None))
    app.state.registry.refresh()
    assert app.state.registry.current is not None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return schemathesis.openapi.from_asgi("/openapi.json", app)


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


def test_every_operation_is_fuzzed(service_schema):
    paths = {op.path for op in operations(service_schema)}
    assert {"/predict", "/predict/batch", "/v1/models/{name}:predict", "/models"} <= paths


def test_no_server_errors_and_answers_match_the_schema(service_schema):
    """Each operation in turn (schemathesis's pytest plugin does not run on this pytest,
    so Hypothesis drives its strategies directly); failures are collected, not stopped at."""
    failures: list[str] = []
    calls: dict[str, int] = {}
    for operation in operations(service_schema):

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case) -> None:
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1
            case.call_and_validate(
                checks=[not_a_server_error, response_schema_conformance, content_type_conformance]
            )

        try:
            fuzz()
        except Exception as exc:  # report every operation's failure at once
            failures.append(f"{operation.method.upper()} {operation.path}: {exc}")
    assert not failures, "\n\n".join(failures)
    assert len(calls) == len(operations(service_schema))
    # operations without inputs (GET /healthz) are exhausted by one example; the rest
    # really got their share
    assert calls["POST /v1/models/{name}:predict"] == EXAMPLES_PER_OPERATION, calls
    assert sum(calls.values()) >= 8 * EXAMPLES_PER_OPERATION, calls
