"""Settings come from the environment and bad values stop start-up with a message naming the variable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from encoder_serve.service.settings import load_settings


def test_defaults_follow_the_service_contract(monkeypatch):
    for name in ("MAX_BATCH_SIZE", "MAX_WAIT_MS", "PORT", "MAX_INPUTS_PER_REQUEST", "PRECISION", "WORKERS"):
        monkeypatch.delenv(name, raising=False)
    s = load_settings()
    assert (s.port, s.workers, s.precision, s.max_batch_size, s.max_wait_ms, s.max_inputs_per_request) == \
        (8000, 1, "auto", 64, 0.0, 64)
    assert s.api_key is None and s.intra_op_threads >= 1


def test_environment_variables_set_the_knobs(monkeypatch):
    monkeypatch.setenv("MAX_BATCH_SIZE", "8")
    monkeypatch.setenv("PRECISION", "FP32")
    monkeypatch.setenv("ORT_INTRA_OP_THREADS", "3")
    monkeypatch.setenv("API_KEY", "secret")
    s = load_settings()
    assert (s.max_batch_size, s.precision, s.intra_op_threads) == (8, "fp32", 3)
    assert s.api_key.get_secret_value() == "secret" and "secret" not in repr(s)


@pytest.mark.parametrize("name, value", [("MAX_BATCH_SIZE", "0"), ("PRECISION", "fp16"), ("PORT", "http"),
                                         ("MAX_WAIT_MS", "-1"), ("LOG_LEVEL", "loud")])
def test_a_bad_value_names_the_variable(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=f"invalid setting {name}"):
        load_settings()


def test_a_queue_smaller_than_one_request_is_refused(monkeypatch):
    monkeypatch.setenv("MAX_QUEUE_SIZE", "8")
    monkeypatch.setenv("MAX_INPUTS_PER_REQUEST", "16")
    with pytest.raises(ValueError, match="MAX_QUEUE_SIZE"):
        load_settings()


def launch(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "encoder_serve.service"], check=False, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=120)


def test_the_launcher_exits_non_zero_with_a_clear_message_on_bad_settings(service_package):
    result = launch({"MODEL_DIR": str(service_package), "MAX_BATCH_SIZE": "zero"})
    assert result.returncode == 2
    assert "invalid setting MAX_BATCH_SIZE" in result.stderr and "Traceback" not in result.stderr


def test_the_launcher_refuses_a_missing_package(tmp_path):
    result = launch({"MODEL_DIR": str(tmp_path / "nowhere")})
    assert result.returncode == 2 and "nowhere" in result.stderr and "Traceback" not in result.stderr


def test_int8_is_refused_at_start_up_when_the_package_says_it_is_not_servable(service_package, tmp_path):
    package = shutil.copytree(service_package, tmp_path / "package")
    manifest = json.loads((package / "manifest.json").read_text())
    manifest["precisions"]["int8"] = {"file": None, "servable": False, "reason": "failed its accuracy gate"}
    (package / "manifest.json").write_text(json.dumps(manifest))
    result = launch({"MODEL_DIR": str(package), "PRECISION": "int8"})
    assert result.returncode == 2
    assert "PRECISION=int8" in result.stderr and "failed its accuracy gate" in result.stderr
