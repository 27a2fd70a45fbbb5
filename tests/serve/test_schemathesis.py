"""schemathesis against /openapi.json: generated requests to every route, none answered with a 5xx."""
from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402

pytestmark = pytest.mark.slow
EXAMPLES = 25  # per operation: bounded, so CI stays fast


def test_no_server_errors(served):
    from fastapi.testclient import TestClient
    from schemathesis.checks import not_a_server_error

    from convlab.serve.app import create_app
    from convlab.serve.settings import ServerSettings

    app = create_app({"digits": served}, ServerSettings(timeout_s=5), access_log=False)
    with TestClient(app):  # runs the lifespan: the batcher thread serves the generated requests
        schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12  # every route of the server is in the schema
        for operation in operations:

            @given(case=operation.as_strategy())
            @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                      derandomize=True, database=None)
            def no_5xx(case):
                case.call_and_validate(checks=[not_a_server_error])

            no_5xx()
