"""The playground at / in a real headless Chromium (Debian's, driven by Playwright; tests/browser.py), with
the network cut off: it classifies a text, draws the bars in score order and the attention the API answered
(read back from the canvases' pixels and the head view's lines), follows a change of head, shows the API's
422, 401 and 501 messages, and asks for nothing outside the machine. PLAYGROUND=false leaves it out.
"""

from __future__ import annotations

import json
import re
import shutil

import httpx
import numpy as np
import pytest

from encoder_serve.package import MANIFEST, load_package
from encoder_serve.service.testing import LiveServer
from tests.browser import offline_page

TEXT = "i feel wonderful today, everything is going my way"
KEY = "playground-test-key"
# A map's cell has alpha round(sqrt(weight) * 255): compared on that scale, within half a step.
ALPHA_STEP = 0.5 / 255 + 1e-6

READ_ALPHA = """canvas => {
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  const alpha = [];
  for (let k = 3; k < data.length; k += 4) alpha.push(data[k]);
  return {width: canvas.width, height: canvas.height, alpha};
}"""
READ_LINES = """svg => Array.from(svg.querySelectorAll(".lines line"),
  l => [Number(l.dataset.i), Number(l.dataset.j), Number(l.getAttribute("stroke-opacity"))])"""


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module: (page, outside URLs it tried)."""
    with offline_page() as (page, outside):
        page.set_default_timeout(20_000)
        yield page, outside


def is_post(path: str):
    return lambda response: response.request.method == "POST" and response.url.endswith(path)


def open_playground(page, url: str) -> None:
    page.goto(url + "/")
    page.wait_for_function("document.querySelector('#model').textContent !== 'Loading the model…'")


def run_text(page, text: str) -> tuple[list[dict], dict]:
    """Type `text`, press the button; (the classify answer's predictions, the explain answer) the page got."""
    page.fill("#text", text)
    with page.expect_response(is_post("/v1/classify")) as classified, \
            page.expect_response(is_post("/v1/explain")) as explained:
        page.click("#run")
    page.wait_for_function("!document.querySelector('#run').disabled")
    return classified.value.json()["predictions"][0], explained.value.json()


def map_weights(page, selector: str) -> np.ndarray:
    """The weights an attention map's pixels show."""
    read = page.eval_on_selector(selector, READ_ALPHA)
    return (np.array(read["alpha"], dtype=float).reshape(read["height"], read["width"]) / 255) ** 2


def assert_shows(shown: np.ndarray, weights) -> None:
    weights = np.asarray(weights)
    assert shown.shape == weights.shape
    assert np.abs(np.sqrt(shown) - np.sqrt(weights)).max() <= ALPHA_STEP


def head_view_lines(page, layer: int, head: int, tokens: int) -> np.ndarray:
    svg = page.wait_for_selector(f'#head-view svg[data-layer="{layer}"][data-head="{head}"]')
    opacity = np.full((tokens, tokens), np.nan)
    for i, j, value in svg.evaluate(READ_LINES):
        opacity[i, j] = value
    return opacity


def test_the_playground_shows_the_labels_and_the_attention_the_api_answered(server, browser, tmp_path):
    page, outside = browser
    open_playground(page, server.url)
    predictions, explained = run_text(page, TEXT)

    # the bars: the labels in score order, each as long as its score
    bars = page.locator("#predictions li")
    assert bars.locator(".label").all_inner_texts() == [p["label"] for p in predictions]
    scores = [float(s) for s in bars.evaluate_all("items => items.map(i => i.dataset.score)")]
    assert scores == [p["score"] for p in predictions] == sorted(scores, reverse=True)
    track = bars.locator(".bar").first.bounding_box()["width"]
    widths = [bar.bounding_box()["width"] for bar in bars.locator(".fill").all()]
    assert np.abs(np.array(widths) - track * np.array(scores)).max() <= 1, (widths, track, scores)

    # the model view: every layer's and head's map shows the weights the API answered
    attention = explained["attention"]
    weights = np.array(attention["weights"])
    tokens = len(explained["tokens"])
    assert page.locator("#model-grid canvas").count() == attention["layers"] * attention["heads"]
    for layer in range(attention["layers"]):
        for head in range(attention["heads"]):
            assert_shows(map_weights(page, f'.thumbnail[data-layer="{layer}"][data-head="{head}"] canvas'),
                         weights[layer, head])

    # the head view and the query-key view open on layer 1, head 1
    assert np.abs(head_view_lines(page, 0, 0, tokens) - weights[0, 0]).max() <= 1e-6
    page.wait_for_selector('#qk[data-layer="0"][data-head="0"] canvas.weights')
    assert_shows(map_weights(page, "#qk canvas.weights"), weights[0, 0])
    assert page.locator("#qk .qk-tokens li").all_inner_texts() == explained["tokens"]

    # hovering a token shows its row, with the weights written out
    page.hover('#head-view .tokens.left .token[data-index="1"]')
    assert page.locator("#head-view .focus-lines line").count() == tokens
    shown = [float(v) for v in page.locator("#head-view .values text").all_text_contents()]
    assert np.abs(np.array(shown) - weights[0, 0, 1]).max() <= 5e-4
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)

    # another head: the head view redraws, and the query-key view asks for that head
    with page.expect_response(is_post("/v1/explain")) as asked:
        page.locator('#heads label', has_text="2").click()
    assert asked.value.request.post_data_json["head"] == 1
    view = asked.value.json()["query_key"]
    assert (view["layer"], view["head"]) == (0, 1)
    assert np.abs(head_view_lines(page, 0, 1, tokens) - weights[0, 1]).max() <= 1e-6
    assert not np.allclose(weights[0, 0], weights[0, 1])
    page.wait_for_selector('#qk[data-layer="0"][data-head="1"] canvas.weights')
    assert_shows(map_weights(page, "#qk canvas.weights"), weights[0, 1])
    assert page.locator("#qk-title").inner_text() == "Query-key view: layer 1, head 2"
    assert page.locator('.thumbnail[aria-pressed="true"]').get_attribute("data-head") == "1"
    page.screenshot(path=str(tmp_path / "playground-head-2.png"), full_page=True)
    assert not outside, f"the playground tried to load outside resources: {outside}"


def test_texts_of_one_word_to_the_maximum_length_are_drawn(server, browser, package):
    page, outside = browser
    open_playground(page, server.url)
    max_length = load_package(package).max_length
    _, short = run_text(page, "fine")
    assert short["tokens"] == ["[CLS]", "fine", "[SEP]"]
    assert_shows(map_weights(page, '.thumbnail[data-layer="0"][data-head="0"] canvas'),
                 short["attention"]["weights"][0][0])
    _, cut = run_text(page, "happy " * (2 * max_length))
    assert cut["truncated"] and len(cut["tokens"]) == max_length
    assert_shows(map_weights(page, '.thumbnail[data-layer="0"][data-head="0"] canvas'),
                 cut["attention"]["weights"][0][0])
    assert page.locator("#head-view .lines line").count() == max_length ** 2
    assert "cut to the model's maximum" in page.locator("#status").inner_text()
    assert not outside, outside


def test_an_overlong_text_with_truncate_off_shows_the_422_message(server, browser, package, tmp_path):
    page, outside = browser
    open_playground(page, server.url)
    assert page.locator("#head-view .placeholder").inner_text() == "Nothing explained yet."
    page.uncheck("#truncate")
    page.fill("#text", "happy " * (2 * load_package(package).max_length))
    with page.expect_response(is_post("/v1/classify")) as classified:
        page.click("#run")
    assert classified.value.status == 422
    message = page.wait_for_selector('#message[data-status="422"]')
    text = message.inner_text()
    assert classified.value.json()["error"]["message"] in text and "422" in text
    assert "longer than the model's" in text and "inputs" in text
    assert page.locator("#predictions li").count() == 0 and page.locator("#model-grid canvas").count() == 0
    for view in ("#head-view", "#qk"):  # the views point to the message instead of drawing nothing
        assert page.locator(f"{view} .placeholder").inner_text() == "Nothing to show: see the message under the text."
    page.screenshot(path=str(tmp_path / "playground-422.png"))
    assert not outside, outside


def test_with_an_api_key_the_page_asks_for_it_and_then_works(package, browser, tmp_path):
    page, outside = browser
    with LiveServer(package, env={"API_KEY": KEY}) as live:
        open_playground(page, live.url)
        message = page.wait_for_selector('#message[data-status="401"]')
        assert "API key needed" in message.inner_text() and "API key field" in message.inner_text()
        page.fill("#api-key", "wrong")
        page.click("#run")
        assert "not accepted" in page.wait_for_selector('#message[data-status="401"]').inner_text()
        page.fill("#api-key", KEY)
        predictions, explained = run_text(page, TEXT)
        assert page.locator("#message").is_hidden()
        assert page.locator("#predictions .label").all_inner_texts() == [p["label"] for p in predictions]
        assert_shows(map_weights(page, '.thumbnail[data-layer="0"][data-head="0"] canvas'),
                     explained["attention"]["weights"][0][0])
        page.screenshot(path=str(tmp_path / "playground-key.png"))
    assert not outside, outside


def test_a_package_without_an_attention_graph_says_so_and_still_classifies(package, browser, tmp_path):
    page, outside = browser
    copy = shutil.copytree(package, tmp_path / "package")
    manifest = json.loads((copy / MANIFEST).read_text())
    (copy / manifest.pop("attention")["file"]).unlink()
    manifest["files"] = {k: v for k, v in manifest["files"].items() if (copy / k).exists()}
    (copy / MANIFEST).write_text(json.dumps(manifest))
    with LiveServer(copy) as live:
        open_playground(page, live.url)
        page.fill("#text", TEXT)
        page.click("#run")
        notice = page.wait_for_selector('#explain-message[data-status="501"]').inner_text()
        assert "no attention graph" in notice and "encoder-serve export" in notice
        assert page.locator("#predictions li").count() == len(manifest["labels"])
        assert page.locator("#model-grid canvas").count() == 0
        page.screenshot(path=str(tmp_path / "playground-501.png"))
    assert not outside, outside


def test_the_page_and_its_assets_are_served_by_the_service(server):
    page = httpx.get(server.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/playground/playground.js" in page.text
    assert not re.search(r'(src|href)="(https?:)?//', page.text), "the page must load nothing from outside"
    for asset, kind in [("playground.js", "javascript"), ("playground.css", "text/css")]:
        r = httpx.get(f"{server.url}/playground/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"], (asset, r.headers)


def test_playground_false_leaves_the_page_out(package):
    with LiveServer(package, env={"PLAYGROUND": "false"}) as live:
        assert httpx.get(live.url + "/").status_code == 404
        assert httpx.get(live.url + "/playground/playground.js").status_code == 404
        assert httpx.post(live.url + "/v1/classify", json={"inputs": "fine"}).status_code == 200
