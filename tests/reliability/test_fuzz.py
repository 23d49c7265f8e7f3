"""Fuzzing every operation of the OpenAPI schema with schemathesis: valid and invalid requests alike.

Each response must not be a 5xx, must carry a status the schema declares, must match the declared schema
and content type, and must leak nothing internal. The default suite runs a bounded number of examples per
operation and mode (FUZZ_EXAMPLES, default 10, failures not shrunk); the slow run (`make reliability`) many more
(FUZZ_EXAMPLES_SLOW, default 300).

The schema is read from the live service. Hypothesis drives each operation directly (`as_strategy`)
rather than through schemathesis' pytest plugin, whose lazy fixture loader does not run on pytest 9.
"""

from __future__ import annotations

import json
import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import assert_no_internals


def no_server_error(ctx, response, case) -> None:
    """No 5xx -- except a 504 for a request that asked for a deadline under a second itself
    (X-Request-Timeout-Ms): that is the contract's answer when the deadline passes first."""
    headers = {k.lower(): str(v) for k, v in (case.headers or {}).items()}
    deadline = headers.get("x-request-timeout-ms", "")
    if response.status_code == 504 and deadline.isdigit() and int(deadline) < 1000:
        return
    if response.status_code >= 500:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")


CHECKS = [no_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FAST = int(os.environ.get("FUZZ_EXAMPLES", "10"))
SLOW = int(os.environ.get("FUZZ_EXAMPLES_SLOW", "300"))


def fuzz(url: str, model: dict[str, str], mode: GenerationMode, examples: int, shrink: bool) -> None:
    """Run every operation for `examples` cases; fail with every operation's first failure.

    Path parameters {name} and {version} are pinned to the served model, so that request bodies reach
    validation and inference instead of all stopping at 404 (unknown models are tested in test_bad_input).
    In negative mode an operation with nothing to negate (no parameters, no body) is skipped.
    """
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert operations, "the schema declares no operation"
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    failures = []
    for operation in operations:
        pinned = {k: v for k, v in model.items() if f"{{{k}}}" in operation.path}

        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=pinned or None))
        @settings(max_examples=examples, deadline=None, database=None, phases=phases,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            response = case.call_and_validate(checks=CHECKS, timeout=30)
            assert_no_internals(response)

        try:
            check()
        except Unsatisfiable:
            assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request can be generated"
        except (Exception, BaseExceptionGroup) as e:  # noqa: BLE001 -- all reported together below
            failures.append(f"{operation.label}: {type(e).__name__}: {str(e)[:1500]}")
    assert not failures, f"{len(failures)} of {len(operations)} operations failed:\n\n" + "\n\n".join(failures)


@pytest.fixture(scope="module")
def model(model_dir) -> dict[str, str]:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    return {"name": manifest["name"], "version": manifest["version"]}


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_answers_within_its_schema(server, model, mode):
    fuzz(server.url, model, mode, FAST, shrink=False)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_answers_within_its_schema_long(server, model, mode):
    fuzz(server.url, model, mode, SLOW, shrink=True)
