"""POST /v1/explain against the real service: the model's tokens, its labels, every layer's and head's
attention (rows summing to 1), the query-key view a weight is formed from, the errors, and a package
without an attention graph saying how to get one."""

from __future__ import annotations

import json
import shutil

import httpx
import numpy as np
import pytest

from encoder_serve.package import MANIFEST, load_package
from encoder_serve.service.testing import LiveServer
from tests.prometheus import sample, scrape

TEXT = "i feel wonderful today, everything is going my way"


def explain(server, body: dict, **headers: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/explain", json=body, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def explained(server) -> dict:
    r = explain(server, {"inputs": TEXT, "query_key": True, "layer": 1, "head": 1})
    assert r.status_code == 200, r.text
    return r.json()


def test_explain_gives_the_models_tokens_and_every_layers_attention(explained, package):
    manifest = load_package(package).manifest
    tokens = explained["tokens"]
    assert tokens[0] == "[CLS]" and tokens[-1] == "[SEP]" and "wonderful" in "".join(tokens).replace("##", "")
    attention = explained["attention"]
    weights = np.array(attention["weights"])
    assert (attention["layers"], attention["heads"]) == (manifest["encoder"]["n_layers"], manifest["encoder"]["n_heads"])
    assert weights.shape == (attention["layers"], attention["heads"], len(tokens), len(tokens))
    assert np.all(weights >= 0) and np.abs(weights.sum(-1) - 1).max() <= 1e-5
    assert explained["truncated"] is False


def test_explain_ranks_the_labels_as_classify_scores_them(server, explained):
    classified = httpx.post(server.url + "/v1/classify", json={"inputs": TEXT}, timeout=60).json()["predictions"][0]
    assert [p["label"] for p in explained["predictions"]] == [p["label"] for p in classified]
    scores = [p["score"] for p in explained["predictions"]]
    assert scores == sorted(scores, reverse=True)
    assert max(abs(a["score"] - b["score"]) for a, b in zip(explained["predictions"], classified)) <= 1e-4


def test_the_query_key_view_shows_how_a_weight_is_formed(explained):
    view = explained["query_key"]
    queries, keys, scores = np.array(view["queries"]), np.array(view["keys"]), np.array(view["scores"])
    assert (view["layer"], view["head"]) == (1, 1)
    assert queries.shape == keys.shape and queries.shape[0] == len(explained["tokens"])
    assert np.abs(scores - queries @ keys.T / np.sqrt(queries.shape[1])).max() <= 1e-4
    softmax = np.exp(scores - scores.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    assert np.abs(softmax - np.array(explained["attention"]["weights"])[1][1]).max() <= 1e-4


def test_a_one_word_text_and_a_text_at_the_maximum_length_both_explain(server, package):
    max_length = load_package(package).max_length
    short = explain(server, {"inputs": "fine"}).json()
    assert short["tokens"][0] == "[CLS]" and short["tokens"][-1] == "[SEP]"
    cut = explain(server, {"inputs": "happy " * (2 * max_length)}).json()
    assert cut["truncated"] is True and len(cut["tokens"]) == max_length
    assert np.array(cut["attention"]["weights"]).shape[-1] == max_length


@pytest.mark.parametrize(("body", "field"), [
    ({"inputs": "happy " * 500, "truncate": False}, "inputs"),
    ({"inputs": "fine", "layer": 99}, "layer"),
    ({"inputs": "fine", "head": -1}, "head"),
    ({"inputs": ["two", "texts"]}, "inputs"),
    ({"inputs": "   "}, "inputs"),
    ({"inputs": "fine", "extra": 1}, "extra"),
])
def test_bad_explain_requests_get_422_naming_the_field(server, body, field):
    r = explain(server, body)
    assert r.status_code == 422, r.text
    assert field in [d["field"] for d in r.json()["error"]["details"]]


def test_explain_is_counted_under_its_own_route(server):
    before = scrape(server.url)
    explain(server, {"inputs": "counted"})
    after = scrape(server.url)
    labels = {"route": "/v1/explain", "status": "200"}
    assert sample(after, "encoder_serve_requests_total", **labels) == \
        sample(before, "encoder_serve_requests_total", **labels) + 1


def test_a_package_without_an_attention_graph_says_how_to_build_one(package, tmp_path):
    copy = shutil.copytree(package, tmp_path / "package")
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / manifest.pop("attention")["file"]).unlink()
    manifest["files"] = {k: v for k, v in manifest["files"].items() if (copy / k).exists()}
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with LiveServer(copy) as live:
        r = explain(live, {"inputs": "fine"})
        assert r.status_code == 501 and r.json()["error"]["type"] == "not_available"
        assert "no attention graph" in r.json()["error"]["message"] and "encoder-serve export" in r.text
        assert httpx.post(live.url + "/v1/classify", json={"inputs": "fine"}).status_code == 200
