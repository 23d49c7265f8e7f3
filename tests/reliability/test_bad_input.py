"""Bad input gets the right 4xx with a JSON message naming what was wrong -- never a 5xx, never a trace.

The service runs with the suite's LIMITS (16 inputs per request, 2,000 characters per input, 64 KiB bodies).
Every case is sent as raw bytes, so malformed bodies reach the service exactly as written here.
"""

from __future__ import annotations

import json

import pytest

from .conftest import LIMITS, assert_error, assert_no_internals

MAX_INPUTS = int(LIMITS["MAX_INPUTS_PER_REQUEST"])
MAX_CHARS = int(LIMITS["MAX_CHARS_PER_INPUT"])
MAX_BODY = int(LIMITS["MAX_BODY_BYTES"])
JSON = {"content-type": "application/json"}


def body(obj) -> bytes:
    return json.dumps(obj).encode()


# (case id, raw body, words of which the message must contain one)
UNPROCESSABLE = [
    ("empty_string", body({"inputs": ""}), ("inputs",)),
    ("empty_list", body({"inputs": []}), ("inputs",)),
    ("whitespace_only", body({"inputs": " \t\n\u00a0 "}), ("inputs",)),
    ("one_empty_among_many", body({"inputs": ["fine", ""]}), ("inputs",)),
    ("longer_than_max_chars", body({"inputs": "a" * (MAX_CHARS + 1)}), ("inputs",)),
    ("more_inputs_than_allowed", body({"inputs": ["text"] * (MAX_INPUTS + 1)}), ("inputs",)),
    ("inputs_number", body({"inputs": 5}), ("inputs",)),
    ("inputs_null", body({"inputs": None}), ("inputs",)),
    ("inputs_list_of_numbers", body({"inputs": [1, 2]}), ("inputs",)),
    ("inputs_object", body({"inputs": {"text": "hi"}}), ("inputs",)),
    ("inputs_nested_lists", body({"inputs": [["nested"]]}), ("inputs",)),
    ("inputs_missing", body({}), ("inputs",)),
    ("top_k_string", body({"inputs": "hi", "top_k": "three"}), ("top_k",)),
    ("top_k_zero", body({"inputs": "hi", "top_k": 0}), ("top_k",)),
    ("top_k_negative", body({"inputs": "hi", "top_k": -1}), ("top_k",)),
    ("top_k_fraction", body({"inputs": "hi", "top_k": 2.5}), ("top_k",)),
    ("top_k_nan", b'{"inputs": "hi", "top_k": NaN}', ("top_k", "json")),
    ("truncate_not_bool", body({"inputs": "hi", "truncate": "maybe"}), ("truncate",)),
    ("extra_field", body({"inputs": "hi", "topk": 3}), ("topk",)),
    ("body_is_array", body(["hi"]), ("body", "object", "dict")),
    ("body_is_string", body("hi"), ("body", "object", "dict")),
    ("body_is_null", b"null", ("body", "object", "dict", "inputs")),
    ("body_empty", b"", ("body", "json", "inputs")),
    ("json_syntax_error", b'{"inputs": "hi"', ("json",)),
    ("json_trailing_garbage", b'{"inputs": "hi"} x', ("json",)),
    ("invalid_utf8", b'{"inputs": "caf\xe9 \xff\xfe"}', ("utf", "unicode", "json", "decode")),
    ("lone_surrogate", b'{"inputs": "broken \\ud800 half"}', ("utf", "unicode", "surrogate", "json", "inputs")),
    ("deeply_nested_json", b'{"inputs": ' + b"[" * 20_000 + b"]" * 20_000 + b"}",
     ("json", "inputs", "nest", "deep", "depth")),
]


@pytest.mark.parametrize("raw,words", [c[1:] for c in UNPROCESSABLE], ids=[c[0] for c in UNPROCESSABLE])
def test_malformed_classify_request_is_rejected_naming_the_problem(client, raw, words):
    response = client.post("/v1/classify", content=raw, headers=JSON)
    assert_error(response, {400, 422}, words)


@pytest.mark.parametrize("content_type,raw", [
    ("text/plain", body({"inputs": "hi"})),
    ("application/x-www-form-urlencoded", b"inputs=hi"),
    ("multipart/form-data; boundary=x", b'--x\r\nContent-Disposition: form-data; name="inputs"\r\n\r\nhi\r\n--x--'),
    (None, body({"inputs": "hi"})),
], ids=["text_plain", "form", "multipart", "no_content_type"])
def test_non_json_content_type_is_rejected(client, content_type, raw):
    headers = {"content-type": content_type} if content_type else {}
    request = client.build_request("POST", "/v1/classify", content=raw, headers=headers)
    if content_type is None:
        request.headers.pop("content-type", None)
    response = client.send(request)
    assert_error(response, {415, 422}, ("content-type", "content type", "media type", "json"))


def test_body_over_the_limit_is_413(client):
    response = client.post("/v1/classify", content=body({"inputs": "x" * MAX_BODY}), headers=JSON)
    assert_error(response, {413}, ("body", "large", "bytes", "size"))


def test_chunked_body_over_the_limit_is_413_without_a_content_length(client):
    """Without Content-Length the limit must still hold while the body streams in."""
    def chunks():
        yield b'{"inputs": "'
        for _ in range(2 * MAX_BODY // 4096):
            yield b"x" * 4096
        yield b'"}'
    response = client.post("/v1/classify", content=chunks(), headers=JSON)
    assert "content-length" not in response.request.headers
    assert_error(response, {413}, ("body", "large", "bytes", "size"))


def test_text_longer_than_the_model_is_rejected_when_truncation_is_off(client):
    long_text = " ".join(["word"] * (MAX_CHARS // 5))
    response = client.post("/v1/classify", json={"inputs": long_text, "truncate": False})
    assert_error(response, {413, 422}, ("token", "truncat", "long"))


@pytest.mark.parametrize("text", [
    "hello\x00world\x07 \x1b[31mred\x1b[0m \x7f\x08",  # control characters, ANSI escapes, DEL
    "我今天很开心，因为天气很好",  # Chinese
    "أنا سعيد جدا اليوم",  # Arabic, right to left
    "मैं आज बहुत खुश हूँ",  # Devanagari with combining marks
    "Я сегодня очень счастлив",  # Cyrillic
    "😀🎉👩‍👩‍👧‍👦 🏳️‍🌈",  # emoji, zero-width joiners
    "e\u0301\u0302\u0303\u0304 \u200b\u200e\u202e reversed \ufeff",  # stacked accents, bidi and zero-width marks
    "\U0001d54f\U0001d556\U0001d569\U0001d565 𝔣𝔯𝔞𝔨𝔱𝔲𝔯",  # mathematical alphanumerics (NFKC folds them)
    "a",
    " ".join(["word"] * (MAX_CHARS // 5)),  # far more tokens than the model takes: truncated by default
], ids=["control_chars", "chinese", "arabic", "devanagari", "cyrillic", "emoji", "marks", "math_letters",
        "one_char", "needs_truncation"])
def test_any_script_or_control_character_is_classified(client, text):
    response = client.post("/v1/classify", json={"inputs": [text]})
    assert response.status_code == 200, response.text[:500]
    (scores,) = response.json()["predictions"]
    assert scores and abs(sum(s["score"] for s in scores) - 1.0) < 1e-3


def test_unknown_route_and_wrong_method_get_json_errors(client):
    assert_error(client.get("/v1/nope"), {404}, ("not found",))
    assert_error(client.get("/v1/classify"), {405}, ("method",))
    assert_error(client.delete("/v1/models"), {405}, ("method",))


@pytest.fixture(scope="module")
def v2_input(client, model_name) -> dict:
    metadata = client.get(f"/v2/models/{model_name}")
    assert metadata.status_code == 200, metadata.text
    (spec,) = metadata.json()["inputs"]
    return spec


V2_BAD = [
    ("no_inputs", lambda name: {"outputs": []}, ("inputs",)),
    ("empty_inputs", lambda name: {"inputs": []}, ("inputs",)),
    ("unknown_input_name", lambda name: {"inputs": [{"name": "bogus", "shape": [1], "datatype": "BYTES",
                                                      "data": ["hi"]}]}, ("bogus", "name", "input")),
    ("wrong_datatype", lambda name: {"inputs": [{"name": name, "shape": [1], "datatype": "FP32",
                                                  "data": [1.0]}]}, ("datatype", "bytes", "fp32")),
    ("shape_mismatch", lambda name: {"inputs": [{"name": name, "shape": [3], "datatype": "BYTES",
                                                  "data": ["hi"]}]}, ("shape",)),
    ("data_not_strings", lambda name: {"inputs": [{"name": name, "shape": [2], "datatype": "BYTES",
                                                    "data": [1, 2]}]}, ("data", "string", "str")),
    ("too_many_texts", lambda name: {"inputs": [{"name": name, "shape": [MAX_INPUTS + 1], "datatype": "BYTES",
                                                  "data": ["hi"] * (MAX_INPUTS + 1)}]}, ("input", "data", "shape")),
]


@pytest.mark.parametrize("make,words", [c[1:] for c in V2_BAD], ids=[c[0] for c in V2_BAD])
def test_malformed_v2_infer_request_is_rejected_naming_the_problem(client, model_name, v2_input, make, words):
    response = client.post(f"/v2/models/{model_name}/infer", json=make(v2_input["name"]))
    assert_error(response, {400, 422}, words)


def test_v2_unknown_model_is_404_naming_it(client):
    assert_error(client.get("/v2/models/no-such-model"), {404}, ("no-such-model",))
    assert_error(client.post("/v2/models/no-such-model/infer", json={"inputs": []}), {404}, ("no-such-model",))


def test_no_response_reveals_the_model_directory(client, model_dir, model_name):
    """Metadata routes describe the model by name and version, not by where it sits on disk."""
    for path in ("/v1/models", "/v2", f"/v2/models/{model_name}", "/openapi.json", "/healthz", "/readyz"):
        response = client.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code}"
        assert_no_internals(response, str(model_dir.resolve()))
