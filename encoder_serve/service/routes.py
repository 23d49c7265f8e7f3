"""Every route the service answers, declared once.

The routers register their handlers on these paths, the middleware labels metrics and logs with them and
admits or refuses work by their kind before any handler runs (so a request refused before routing is
still counted under its real route), and the fast path is found here. A test checks that the FastAPI
application and this table list the same routes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum


class Kind(StrEnum):
    INFERENCE = "inference"  # queues texts for the batched model: admission by concurrency and queue delay
    EXPLAIN = "explain"  # one text through the attention graph, on its own bounded lane
    PROBE = "probe"  # liveness and readiness: always answered, never admitted or refused
    OPERATIONS = "operations"  # metadata, metrics
    PAGE = "page"  # documentation and the playground: static files and HTML


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # the template, as FastAPI writes it ("/v2/models/{name}/infer"): the metrics' route label
    kind: Kind
    prefix: bool = False  # `path` ends in "/{path}" and matches every file below it (a mounted directory)
    fast: bool = False  # called by the middleware directly, without FastAPI's routing (see middleware.py)
    pattern: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = ["[^/]+" if part.startswith("{") else re.escape(part) for part in self.path.split("/")]
        if self.prefix:
            parts[-1] = ".+"
        object.__setattr__(self, "pattern", re.compile("/".join(parts)))


CLASSIFY = Route("POST", "/v1/classify", Kind.INFERENCE, fast=True)
EXPLAIN = Route("POST", "/v1/explain", Kind.EXPLAIN)
MODELS = Route("GET", "/v1/models", Kind.OPERATIONS)
HEALTHZ = Route("GET", "/healthz", Kind.PROBE)
READYZ = Route("GET", "/readyz", Kind.PROBE)
METRICS = Route("GET", "/metrics", Kind.OPERATIONS)
V2_SERVER = Route("GET", "/v2", Kind.OPERATIONS)
V2_LIVE = Route("GET", "/v2/health/live", Kind.PROBE)
V2_READY = Route("GET", "/v2/health/ready", Kind.PROBE)
V2_MODEL = Route("GET", "/v2/models/{name}", Kind.OPERATIONS)
V2_MODEL_VERSION = Route("GET", "/v2/models/{name}/versions/{version}", Kind.OPERATIONS)
V2_MODEL_READY = Route("GET", "/v2/models/{name}/ready", Kind.PROBE)
V2_MODEL_VERSION_READY = Route("GET", "/v2/models/{name}/versions/{version}/ready", Kind.PROBE)
V2_INFER = Route("POST", "/v2/models/{name}/infer", Kind.INFERENCE)
V2_INFER_VERSION = Route("POST", "/v2/models/{name}/versions/{version}/infer", Kind.INFERENCE)
OPENAPI = Route("GET", "/openapi.json", Kind.PAGE)
DOCS = Route("GET", "/docs", Kind.PAGE)
DOCS_OAUTH = Route("GET", "/docs/oauth2-redirect", Kind.PAGE)
DOCS_ASSETS = Route("GET", "/docs/assets/{path}", Kind.PAGE, prefix=True)
PLAYGROUND = Route("GET", "/", Kind.PAGE)
PLAYGROUND_ASSETS = Route("GET", "/playground/{path}", Kind.PAGE, prefix=True)

ROUTES: tuple[Route, ...] = (
    CLASSIFY, EXPLAIN, MODELS, HEALTHZ, READYZ, METRICS,
    V2_SERVER, V2_LIVE, V2_READY, V2_MODEL, V2_MODEL_VERSION, V2_MODEL_READY, V2_MODEL_VERSION_READY,
    V2_INFER, V2_INFER_VERSION,
    OPENAPI, DOCS, DOCS_OAUTH, DOCS_ASSETS, PLAYGROUND, PLAYGROUND_ASSETS,
)
UNMATCHED = "unmatched"  # the route label of a path no route has

_EXACT = {(r.method, r.path): r for r in ROUTES if "{" not in r.path}
_PATHS = {r.path for r in ROUTES if "{" not in r.path}
_TEMPLATED = [r for r in ROUTES if "{" in r.path]


def match(method: str, path: str) -> tuple[Route | None, str]:
    """(the route for this method and path, or None; the route label). A path that a route has with another
    method (405) still gets that route's label, so only paths no route has are `unmatched`."""
    if method == "HEAD":  # answered by the GET route, as Starlette does
        method = "GET"
    route = _EXACT.get((method, path))
    if route is not None:
        return route, route.path
    if path in _PATHS:
        return None, path
    label = UNMATCHED
    for route in _TEMPLATED:
        if route.pattern.fullmatch(path):
            if route.method == method:
                return route, route.path
            label = route.path
    return None, label
