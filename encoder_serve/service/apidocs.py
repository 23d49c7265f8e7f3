"""The API's documentation page, `/docs` (Swagger UI), served with its own assets.

FastAPI's default page loads Swagger UI from a public CDN, so behind a firewall, or offline, it is blank.
Here the JavaScript and CSS come from the `fastapi-offline` package (a maintained copy of the Swagger UI 5
bundle) and are served by the service itself under /docs/assets. No ReDoc page: its bundle fetches a logo
from its vendor's CDN.
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

ASSETS_PATH = "/docs/assets"


def add_docs_pages(app: FastAPI) -> None:
    """/docs and /docs/oauth2-redirect on packaged assets; build the app with docs_url=None, redoc_url=None."""
    app.mount(ASSETS_PATH, StaticFiles(directory=str(files("fastapi_offline") / "static")), name="docs-assets")
    title = app.title

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title=f"{title} - Swagger UI",
                                   swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
                                   swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
                                   oauth2_redirect_url="/docs/oauth2-redirect")

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()
