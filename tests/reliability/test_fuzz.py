"""Fuzzing every operation of the OpenAPI schema with schemathesis: valid and invalid requests alike.

Each response must not be a 5xx, must carry a status the schema declares, and must match the declared
schema and content type. The default suite runs a bounded number of examples per operation
(FUZZ_EXAMPLES, default 25); the slow run (`make reliability`) many more (FUZZ_EXAMPLES_SLOW, default 300).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from .conftest import assert_no_internals

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FAST = int(os.environ.get("FUZZ_EXAMPLES", "25"))
SLOW = int(os.environ.get("FUZZ_EXAMPLES_SLOW", "300"))


@pytest.fixture(scope="session")
def api_schema(server):
    return schemathesis.openapi.from_url(server.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


def call_and_check(case) -> None:
    response = case.call_and_validate(checks=CHECKS, timeout=30)
    assert_no_internals(response)


def fuzz_settings(examples: int):
    return settings(max_examples=examples, deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))


@schema.parametrize()
@fuzz_settings(FAST)
def test_every_operation_answers_within_its_schema(case):
    call_and_check(case)


@pytest.mark.slow
@schema.parametrize()
@fuzz_settings(SLOW)
def test_every_operation_answers_within_its_schema_long(case):
    call_and_check(case)
