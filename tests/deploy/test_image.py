"""The Dockerfile: lint-clean, multi-stage, serving dependencies only, unprivileged, health-checked.

Building and running the image needs podman and root: `make image` (deploy/image/build_and_test.sh).
"""

from __future__ import annotations

import re
import subprocess
import tomllib

from tests.deploy.deploy_config import REPO, tool

DOCKERFILE = REPO / "Dockerfile"


def stages() -> list[list[str]]:
    """The Dockerfile's instructions (continuations joined), split into build stages."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    out: list[list[str]] = []
    for line in lines:
        if line.upper().startswith("FROM "):
            out.append([])
        if out:
            out[-1].append(line)
    return out


def test_hadolint_passes():
    out = subprocess.run([tool("hadolint"), str(DOCKERFILE)], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_base_image_is_a_build_argument_for_every_stage():
    assert re.search(r"^ARG BASE_IMAGE=\S+", DOCKERFILE.read_text(), re.MULTILINE)
    assert all(stage[0].startswith("FROM ${BASE_IMAGE}") for stage in stages())


def test_runtime_stage_installs_nothing_but_copies_the_serving_venv():
    build, runtime = stages()[0], stages()[-1]
    assert len(stages()) >= 2
    install = " ".join(line for line in build if line.startswith("RUN"))
    assert '".[serve,otel]"' in install, "the build stage installs the serve and otel extras, nothing else"
    assert not any(line.startswith("RUN") and ("pip" in line or "apt" in line) for line in runtime)
    assert any(line.startswith("COPY --from=") and "/opt/venv" in line for line in runtime)
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name in ("serve", "otel"):
        assert not [d for d in extras[name] if re.match(r"(torch|transformers|onnx\b|onnxscript)", d)], name


def test_runtime_stage_is_unprivileged_exposes_both_ports_and_checks_healthz_on_the_operations_port():
    runtime = stages()[-1]
    user = next(line for line in runtime if line.startswith("USER")).split()[1]
    assert not re.match(r"(0|root)(:|$)", user) and "UID" in user
    assert re.search(r"^ARG UID=[1-9][0-9]{3,}$", "\n".join(runtime), re.MULTILINE)
    assert "EXPOSE 8000 8001" in runtime
    assert re.search(r"^ENV .*\bOPS_PORT=8001\b", "\n".join(runtime), re.MULTILINE)
    healthcheck = next(line for line in runtime if line.startswith("HEALTHCHECK"))
    assert "/healthz" in healthcheck and "OPS_PORT" in healthcheck and "curl" not in healthcheck
    assert any(line.startswith("ENTRYPOINT") and "encoder_serve.service" in line for line in runtime)


def test_model_package_is_baked_from_a_build_argument_and_overridable_by_model_dir():
    runtime = "\n".join(stages()[-1])
    assert re.search(r"^ARG MODEL_PACKAGE=models/emotion$", runtime, re.MULTILINE)
    copied_to = re.search(r"^COPY .*\$\{MODEL_PACKAGE\} (\S+)$", runtime, re.MULTILINE).group(1)
    assert re.search(rf"MODEL_DIR={re.escape(copied_to)}\b", runtime)


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies():
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert ignore[next(i for i, line in enumerate(ignore) if not line.startswith("#"))] == "*"
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    copied = set()
    for line in (line for stage in stages() for line in stage):
        if line.startswith("COPY") and "--from=" not in line:
            copied.update(p.rstrip("/").split("/")[0] for p in line.split()[1:-1] if not p.startswith("--"))
    copied = {"models" if p == "${MODEL_PACKAGE}" else p for p in copied}
    assert copied == allowed, f"COPY sources {sorted(copied)} vs .dockerignore allow-list {sorted(allowed)}"
