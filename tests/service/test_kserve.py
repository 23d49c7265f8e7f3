"""The Open Inference Protocol (KServe v2) driven by the real Triton client, binary and JSON tensors."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

TEXTS = ["i feel wonderful today", "this is so unfair", "what a surprise"]


@pytest.fixture(scope="module")
def client(server):
    with triton.InferenceServerClient(server.url.removeprefix("http://")) as c:
        yield c


@pytest.fixture(scope="module")
def model_name(server) -> str:
    return httpx.get(server.url + "/v1/models").json()["models"][0]["name"]


def infer(client, model_name, texts, binary: bool, outputs=("probabilities", "label")):
    tensor = triton.InferInput("text", [len(texts), 1], "BYTES")
    tensor.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object), binary_data=binary)
    requested = [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs]
    return client.infer(model_name, [tensor], outputs=requested)


def test_server_and_model_health_and_metadata(client, model_name, reference):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(model_name)
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    meta = client.get_model_metadata(model_name)
    assert meta["inputs"][0] == {"name": "text", "datatype": "BYTES", "shape": [-1]}
    assert meta["outputs"][0]["shape"] == [-1, len(reference.labels)]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_infer_returns_the_same_probabilities_as_the_model_alone(client, model_name, reference, binary):
    result = infer(client, model_name, TEXTS, binary)
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (len(TEXTS), len(reference.labels))
    expected = np.stack([reference.probabilities(t) for t in TEXTS])
    assert np.abs(probabilities - expected).max() <= 1e-5
    labels = [x.decode() if isinstance(x, bytes) else x for x in result.as_numpy("label").ravel()]
    assert labels == [reference.labels[i] for i in expected.argmax(axis=1)]


def test_the_client_default_request_without_requested_outputs_works(client, model_name):
    tensor = triton.InferInput("text", [2], "BYTES")
    tensor.set_data_from_numpy(np.array([b"hello", b"goodbye"], dtype=object))
    result = client.infer(model_name, [tensor])
    assert result.as_numpy("probabilities").shape[0] == 2


def test_an_unknown_model_is_404_and_a_blank_text_is_422(client, model_name, server):
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no-such-model")
    r = httpx.post(f"{server.url}/v2/models/{model_name}/infer", json={
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["fine", " "]}]})
    assert r.status_code == 422 and r.json()["error"]["details"][0]["field"] == "inputs[0].data[1]"
    wrong = httpx.post(f"{server.url}/v2/models/{model_name}/infer", json={
        "inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a", "b"]}]})
    assert wrong.status_code == 422 and wrong.json()["error"]["details"][0]["field"] == "inputs[0].shape"
