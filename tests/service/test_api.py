"""The /v1 API contract against the real service (its launcher on a real port, a real HTTP client)."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from encoder_serve.service.settings import Settings
from tests.prometheus import sample, scrape

TEXTS = ["i feel wonderful today", "this is so unfair and i am furious", "i am scared of the dark",
         "what a surprise that was", "i miss you so much", "ok"]


def classify(server, payload, **kw) -> httpx.Response:
    return httpx.post(server.url + "/v1/classify", json=payload, timeout=30, **kw)


def test_classify_answers_one_ranked_list_per_input_in_input_order(server, reference):
    r = classify(server, {"inputs": TEXTS})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == reference.ref and len(body["predictions"]) == len(TEXTS)
    for text, ranking in zip(TEXTS, body["predictions"]):
        scores = [p["score"] for p in ranking]
        assert scores == sorted(scores, reverse=True)
        assert {p["label"] for p in ranking} == set(reference.labels)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
        expected = reference.scores(text)
        assert all(abs(p["score"] - expected[p["label"]]) <= 1e-5 for p in ranking)


def test_a_single_string_is_answered_like_a_one_element_list(server):
    one = classify(server, {"inputs": TEXTS[0]}).json()
    listed = classify(server, {"inputs": [TEXTS[0]]}).json()
    assert one == listed and len(one["predictions"]) == 1


def test_top_k_keeps_the_k_most_likely_labels(server):
    full = classify(server, {"inputs": TEXTS[1]}).json()["predictions"][0]
    top = classify(server, {"inputs": TEXTS[1], "top_k": 2}).json()["predictions"][0]
    assert top == full[:2]


@pytest.mark.parametrize("payload, field", [
    ({"inputs": []}, "inputs"),
    ({"inputs": ""}, "inputs[0]"),
    ({"inputs": ["fine", "   \n"]}, "inputs[1]"),
    ({"inputs": ["fine", 3]}, "inputs[1]"),
    ({"inputs": {"text": "x"}}, "inputs"),
    ({}, "inputs"),
    ({"inputs": "x", "extra": 1}, "extra"),
    ({"inputs": "x", "top_k": 0}, "top_k"),
    ({"inputs": "x", "top_k": 7}, "top_k"),
    ({"inputs": "x", "top_k": "2"}, "top_k"),
    ({"inputs": "x", "truncate": "no"}, "truncate"),
    ({"inputs": ["x"] * 17}, "inputs"),
    ({"inputs": ["x", "y" * 2001]}, "inputs[1]"),
])
def test_invalid_requests_get_422_naming_the_field(server, payload, field):
    r = classify(server, payload)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["type"] == "validation_error" and field in [d["field"] for d in error["details"]]


@pytest.mark.parametrize("content, content_type", [(b'{"inputs": "unterminated', "application/json"),
                                                    (b'["a list"]', "application/json"),
                                                    (b'{"inputs": "x"}', "application/x-www-form-urlencoded"),
                                                    (b'{"inputs": "x"}', "")])
def test_a_body_that_is_not_a_json_object_gets_422_naming_the_body(server, content, content_type):
    r = httpx.post(server.url + "/v1/classify", content=content, headers={"content-type": content_type})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "body"


@pytest.mark.parametrize("content, problem", [(b'{"inputs": "caf\xe9 \xff"}', "unicode"),
                                              (b'{"inputs": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "recursion"),
                                              (b'{"inputs": "x"} trailing', "trailing")])
def test_malformed_json_gets_422_saying_what_is_wrong(server, content, problem):
    r = httpx.post(server.url + "/v1/classify", content=content, headers={"content-type": "application/json"})
    assert r.status_code == 422
    (detail,) = r.json()["error"]["details"]
    assert detail["field"] == "body" and "invalid JSON" in detail["message"] and problem in detail["message"]


def test_json_with_a_charset_or_a_json_suffix_media_type_is_accepted(server):
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        r = httpx.post(server.url + "/v1/classify", content=b'{"inputs": "x"}', headers={"content-type": content_type})
        assert r.status_code == 200, content_type


def test_the_openapi_document_describes_the_classify_body_and_the_timeout_header(server):
    operation = httpx.get(server.url + "/openapi.json").json()["paths"]["/v1/classify"]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/ClassifyRequest"} and operation["requestBody"]["required"]
    assert [p["name"] for p in operation["parameters"]] == ["x-request-timeout-ms"]


def test_a_text_over_max_length_with_truncate_false_gets_422_naming_its_index(server):
    long_text = " ".join(["word"] * 300)  # 1,500 characters, far over 64 tokens
    assert classify(server, {"inputs": ["short", long_text], "truncate": True}).status_code == 200
    r = classify(server, {"inputs": ["short", long_text], "truncate": False})
    assert r.status_code == 422
    assert r.json()["error"]["details"][0]["field"] == "inputs[1]"


def test_a_body_over_the_limit_gets_413_by_header_or_by_stream(server):
    big = b'{"inputs": "' + b"a" * 70_000 + b'"}'
    r = httpx.post(server.url + "/v1/classify", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["type"] == "payload_too_large"
    chunked = httpx.post(server.url + "/v1/classify", content=iter([big[:40_000], big[40_000:]]),
                         headers={"content-type": "application/json"})
    assert chunked.status_code == 413 and "MAX_BODY_BYTES" in chunked.json()["error"]["message"]


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_a_bad_timeout_header_gets_422_naming_the_header(server, value):
    r = classify(server, {"inputs": "x"}, headers={"X-Request-Timeout-Ms": value})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "x-request-timeout-ms"


def test_every_request_gets_one_whole_json_access_line(server):
    """Access lines are gathered and written in chunks by each of the two workers into one file: every
    request still gets exactly one line, and no line is cut or mixed with another."""
    ids = [f"access-{i:03d}" for i in range(300)]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda rid: classify(server, {"inputs": "x"}, headers={"X-Request-ID": rid}), ids))
    assert all(a.status_code == 200 for a in answers)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [json.loads(line) for line in server.log.read_text().splitlines()]  # each a whole JSON object
        access = [line for line in lines if line.get("request_id", "").startswith("access-")]
        if len(access) >= len(ids):
            break
        time.sleep(0.05)
    assert sorted(line["request_id"] for line in access) == ids
    assert {(line["logger"], line["level"], line["msg"], line["route"], line["status"]) for line in access} == {
        ("encoder_serve.access", "info", "request", "/v1/classify", 200)}
    assert all(line["duration_ms"] > 0 for line in access)


def test_unknown_routes_and_methods_answer_in_the_same_error_shape(server):
    missing = httpx.get(server.url + "/v1/nothing")
    wrong_method = httpx.get(server.url + "/v1/classify")
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["type"] == "method_not_allowed"


def test_an_incoming_request_id_is_kept_and_a_missing_one_is_made(server):
    kept = classify(server, {"inputs": "x"}, headers={"X-Request-ID": "trace-42"})
    assert kept.headers["x-request-id"] == "trace-42"
    forged = 'x","level":"critical'  # would forge a log field if it were kept
    made = classify(server, {"inputs": "x"}, headers={"X-Request-ID": forged})
    assert made.headers["x-request-id"] not in ("", forged)
    assert server.log_lines('"request_id":"trace-42"')
    assert all(json.loads(line)["level"] != "critical" for line in server.log.read_text().splitlines())
    made_ids = {classify(server, {"inputs": "x"}).headers["x-request-id"] for _ in range(20)}
    assert len(made_ids) == 20 and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in made_ids)


def test_the_worker_hides_its_start_up_heap_from_the_garbage_collector_and_times_its_pauses(server):
    line = next(line for line in server.log.read_text().splitlines() if "start-up objects frozen" in line)
    assert int(re.search(r"(\d+) start-up objects frozen", line)[1]) > 10_000
    assert f"young-generation threshold {Settings.model_fields['gc_young_threshold'].default}" in line
    deadline = time.monotonic() + 5  # the collection before the freeze reaches /metrics within a second
    while not sample(scrape(server.url), "encoder_serve_gc_pause_seconds_count", generation="2"):
        assert time.monotonic() < deadline, "no full collection on /metrics"
        time.sleep(0.2)


def test_models_describes_the_served_package(server, reference):
    (model,) = httpx.get(server.url + "/v1/models").json()["models"]
    assert model["ref"] == reference.ref and model["labels"] == reference.labels
    assert model["precision"] == "fp32" and "fp32" in model["precisions"]


def test_health_readiness_and_docs_answer(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").status_code == 200
    assert httpx.get(server.url + "/docs").status_code == 200
    schema = httpx.get(server.url + "/openapi.json").json()
    request_schema = schema["components"]["schemas"]["ClassifyRequest"]["properties"]
    assert request_schema["inputs"]["anyOf"][1]["maxItems"] == 16  # the limit in force, from the settings


def test_metrics_count_requests_texts_and_batches(server):
    before = scrape(server.url)
    classify(server, {"inputs": TEXTS[:3]})
    classify(server, {"inputs": []})
    after = scrape(server.url)
    ok = {"route": "/v1/classify", "method": "POST", "status": "200"}
    assert sample(after, "encoder_serve_requests_total", **ok) == sample(before, "encoder_serve_requests_total", **ok) + 1
    bad = {"route": "/v1/classify", "method": "POST", "status": "422"}
    assert sample(after, "encoder_serve_requests_total", **bad) >= sample(before, "encoder_serve_requests_total", **bad) + 1
    assert sample(after, "encoder_serve_texts_total") == sample(before, "encoder_serve_texts_total") + 3
    assert sample(after, "encoder_serve_batch_size_count") > sample(before, "encoder_serve_batch_size_count")
    for name in ("encoder_serve_request_duration_seconds_count", "encoder_serve_tokenization_duration_seconds_count",
                 "encoder_serve_queue_wait_seconds_count", "encoder_serve_inference_duration_seconds_count",
                 "encoder_serve_batch_tokens_count", "encoder_serve_padding_ratio_count"):
        assert sample(after, name) > 0, name
    assert sample(after, "encoder_serve_model_info", precision="fp32") == 1
    assert sample(after, "encoder_serve_ready") == 1
    names = {name for name, _ in after}
    assert {"encoder_serve_queue_depth", "encoder_serve_in_flight_requests"} <= names
    assert sample(after, "encoder_serve_process_cpu_seconds_total") > 0  # the server's own vital signs
    assert sample(after, "encoder_serve_process_resident_memory_bytes") > 50 * 2**20


def test_a_request_that_finds_its_worker_idle_is_computed_on_the_event_loop(server, reference):
    """One request at a time: each is its worker's only one, so its batch runs on the event loop's thread
    (INLINE_LONE_REQUESTS, on by default), and answers what the model answers. The test below checks
    that concurrent requests are still batched together."""
    before = scrape(server.url)
    for text in TEXTS[:3]:
        top = classify(server, {"inputs": [text], "top_k": 1}).json()["predictions"][0][0]
        expected = reference.scores(text)
        assert top["label"] == max(expected, key=expected.get)
        assert top["score"] == pytest.approx(expected[top["label"]], abs=1e-5)
    after = scrape(server.url)
    here = "encoder_serve_batches_on_event_loop_total"
    assert sample(after, here) == sample(before, here) + 3


def test_scores_do_not_depend_on_batch_composition_and_replies_reach_their_callers(server, emotion_test_rows,
                                                                                      reference):
    """64 concurrent clients, each with its own distinct texts of mixed lengths, many rounds: every
    reply must match that client's texts scored alone by ONNX Runtime directly (<= 1e-5)."""
    texts = [row["text"] for row in emotion_test_rows[:256]]
    expected = {t: reference.probabilities(t) for t in texts}
    label_index = {label: i for i, label in enumerate(reference.labels)}

    def client(worker: int) -> list[float]:
        errors = []
        with httpx.Client(base_url=server.url, timeout=60) as http:
            for round_ in range(2):
                mine = texts[(worker * 4 + round_ * 2) % len(texts):][: 1 + (worker + round_) % 3]
                r = http.post("/v1/classify", json={"inputs": mine})
                assert r.status_code == 200, r.text
                for text, ranking in zip(mine, r.json()["predictions"], strict=True):
                    got = np.zeros(len(label_index))
                    for p in ranking:
                        got[label_index[p["label"]]] = p["score"]
                    errors.append(float(np.abs(got - expected[text]).max()))
        return errors

    before = scrape(server.url)
    with ThreadPoolExecutor(64) as pool:
        errors = [e for worker_errors in pool.map(client, range(64)) for e in worker_errors]
    after = scrape(server.url)
    assert max(errors) <= 1e-5
    batches = sample(after, "encoder_serve_batch_size_count") - sample(before, "encoder_serve_batch_size_count")
    texts_done = sample(after, "encoder_serve_texts_total") - sample(before, "encoder_serve_texts_total")
    assert texts_done == len(errors) and batches < texts_done  # texts really were batched together
