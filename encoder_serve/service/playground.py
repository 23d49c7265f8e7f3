"""The playground: a page served by the service itself at `/`, for a person to see what the model does.

Plain files in `encoder_serve/service/playground/` (HTML, one CSS file, one JavaScript module; no build
step, no CDN) that call the same public API a client calls (/v1/models, /v1/classify, /v1/explain).
PLAYGROUND=false leaves both routes out (the production overlay does).
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.responses import FileResponse

from encoder_serve.service import routes

DIRECTORY = files("encoder_serve.service") / "playground"


def add_playground(app: FastAPI) -> None:
    """GET / (the page) and GET /playground/{path} (its assets)."""
    app.mount(routes.PLAYGROUND_ASSETS.path.removesuffix("/{path}"), StaticFiles(directory=str(DIRECTORY)),
              name="playground-assets")

    @app.get(routes.PLAYGROUND.path, include_in_schema=False)
    async def playground() -> FileResponse:
        return FileResponse(str(DIRECTORY / "index.html"), media_type="text/html")
