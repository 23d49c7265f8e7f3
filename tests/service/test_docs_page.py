"""/docs renders in a real headless Chromium with the network cut off: no CDN, nothing outside."""

from __future__ import annotations

import httpx

from tests.browser import offline_page


def test_swagger_ui_renders_every_operation_offline(server, tmp_path):
    with offline_page() as (page, outside):
        page.goto(server.url + "/docs")
        page.wait_for_selector(".opblock", timeout=20_000)
        operations = page.locator(".opblock .opblock-summary-path").all_inner_texts()
        page.screenshot(path=str(tmp_path / "docs.png"), full_page=False)
    assert not outside, f"/docs tried to load outside resources: {outside}"
    assert "/v1/classify" in operations and "/v2/models/{name}/infer" in operations, operations
    assert len(operations) >= 10


def test_redoc_is_not_served(server):  # its bundle fetches a logo from a CDN: /docs is the one page
    assert httpx.get(server.url + "/redoc").status_code == 404


def test_docs_assets_are_served_by_the_service_itself(server):
    html = httpx.get(server.url + "/docs").text
    assert "cdn." not in html and "/docs/assets/swagger-ui-bundle.js" in html
    asset = httpx.get(server.url + "/docs/assets/swagger-ui-bundle.js")
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
    assert len(asset.content) > 500_000
