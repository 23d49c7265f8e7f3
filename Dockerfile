# syntax=docker/dockerfile:1
# encoder-serve: the ONNX Runtime classification service with a model package baked in.
#
#   docker build -t encoder-serve .
#   docker run -p 8000:8000 encoder-serve
#   docker run -p 8000:8000 -v /path/to/package:/models/custom:ro -e MODEL_DIR=/models/custom encoder-serve
#
# BASE_IMAGE must provide python3.11 with the venv module at the same path in both stages (the official
# python:3.11-slim-bookworm does; deploy/image/build_and_test.sh makes an equivalent one with debootstrap).
# MODEL_PACKAGE is the package directory, relative to the build context, that is baked in.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment with the serving dependencies only (no torch, no compilers), and the
# OpenTelemetry SDK, so that tracing needs nothing but OTEL_EXPORTER_OTLP_ENDPOINT ----
FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
# Dependencies in their own layer (a stub package stands in for the source), so that a code change
# rebuilds in seconds and only a pyproject.toml change downloads them again.
RUN python3 -m venv /opt/venv \
    && mkdir encoder_serve && touch encoder_serve/__init__.py \
    && /opt/venv/bin/pip install --no-cache-dir ".[serve,otel]" \
    && /opt/venv/bin/pip uninstall --yes encoder-serve
COPY encoder_serve ./encoder_serve
RUN /opt/venv/bin/pip install --no-cache-dir --no-deps . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} + \
    && /opt/venv/bin/python -m compileall -q /opt/venv/lib

# ---- runtime: the base, the venv, the model package and an unprivileged user ----
FROM ${BASE_IMAGE} AS runtime
ARG MODEL_PACKAGE=models/emotion
ARG UID=10001
LABEL org.opencontainers.image.title="encoder-serve" \
      org.opencontainers.image.description="Transformer encoder text classifier on ONNX Runtime behind FastAPI, with dynamic batching and Prometheus metrics" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid "${UID}" app \
    && useradd --system --uid "${UID}" --gid app --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=build /opt/venv /opt/venv
COPY --chown=root:root ${MODEL_PACKAGE} /models/default
# The service reads its settings from the environment; override any of them with -e / env:.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MODEL_DIR=/models/default \
    HOST=0.0.0.0 \
    PORT=8000 \
    OPS_PORT=8001
USER ${UID}:${UID}
WORKDIR /tmp
# 8000: the API. 8001: operations (/healthz, /readyz, /metrics), answered by a thread of its own even while
# the API's event loop is flooded.
EXPOSE 8000 8001
# No curl in the image: the healthcheck is the same Python that serves. /healthz is liveness (the process
# can still serve); Kubernetes uses its own probes and ignores this.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('OPS_PORT', '8001')}/healthz\", timeout=2).status != 200)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["python", "-m", "encoder_serve.service"]
