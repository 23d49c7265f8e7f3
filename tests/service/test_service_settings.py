"""Settings come from the environment and bad values stop start-up with a message naming the variable."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from encoder_serve.service import settings
from encoder_serve.service.settings import load_settings


def test_defaults_follow_the_service_contract(monkeypatch):
    for name in ("MAX_BATCH_SIZE", "MAX_WAIT_MS", "PORT", "OPS_PORT", "MAX_INPUTS_PER_REQUEST", "PRECISION",
                 "WORKERS", "MODEL_THREADS", "ORT_INTRA_OP_THREADS", "MAX_QUEUE_DELAY_MS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})  # a 4-CPU machine
    monkeypatch.setattr(settings, "CGROUP_CPU_MAX", Path("/nonexistent/cpu.max"))  # and no CPU quota
    s = load_settings()
    assert (s.port, s.ops_port, s.workers, s.precision, s.max_batch_size, s.max_wait_ms, s.max_inputs_per_request,
            s.max_queue_delay_ms, s.max_padding_ratio) == (8000, 8001, 4, "auto", 64, 0.0, 64, 500.0, 0.1)
    assert s.api_key is None
    # a worker per CPU, one batch at a time each, one ORT thread per batch
    assert (s.batch_threads, s.intra_op_threads) == (1, 1)
    assert load_settings(workers=1).batch_threads == 4
    assert load_settings(workers=2).batch_threads == 2
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))
    assert load_settings().workers == settings.MAX_AUTO_WORKERS  # a big machine: more threads per worker
    assert load_settings().batch_threads == 64 // settings.MAX_AUTO_WORKERS


@pytest.mark.parametrize("cpu_max, cpus", [("200000 100000\n", 2), ("150000 100000", 2), ("50000 100000", 1),
                                           ("max 100000", None), ("", None), ("garbage", None)])
def test_a_cgroup_cpu_quota_is_read_in_whole_cpus(tmp_path, cpu_max, cpus):
    path = tmp_path / "cpu.max"
    path.write_text(cpu_max)
    assert settings.cgroup_cpus(path) == cpus


def test_a_cpu_quota_narrows_the_default_workers(monkeypatch, tmp_path):
    """A container limited to 2 CPUs on a 16-CPU node sees 16 in its affinity mask: the quota decides."""
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    monkeypatch.delenv("WORKERS", raising=False)
    monkeypatch.delenv("MODEL_THREADS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setattr(settings, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    s = load_settings()
    assert (settings.available_cpus(), s.workers, s.batch_threads) == (2, 2, 1)


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


def test_the_launcher_lifts_the_open_file_limit_and_warns_when_the_hard_limit_is_short():
    """Every connection is a descriptor: the soft limit goes up to the hard one, and a hard limit below
    WORKERS x MAX_CONNECTIONS is said at start-up. (In a child process: a lowered hard limit stays lowered.)"""
    code = """
import logging, resource, sys
from encoder_serve.service.__main__ import raise_open_files_limit
from encoder_serve.service.settings import load_settings
logging.basicConfig(stream=sys.stdout, format="%(message)s")
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 1024))
raise_open_files_limit(load_settings(workers=2, max_connections=4096))
print("limits", *resource.getrlimit(resource.RLIMIT_NOFILE))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "limits 1024 1024" in out
    assert "open-file limit 1024 is below the 8704 that 2 workers x MAX_CONNECTIONS (4096) need" in out


@pytest.mark.parametrize(("given", "pool"), [(None, False), ("true", True)])
def test_the_launcher_keeps_tokenization_on_the_calling_thread_unless_told_otherwise(given, pool):
    """A worker per CPU already uses the cores: the tokenizer's own thread pool is off by default (no thread
    appears when a batch is tokenized), and an operator's TOKENIZERS_PARALLELISM is kept."""
    code = """
import os
from encoder_serve.service.__main__ import sequential_tokenizer
from encoder_serve.package import load_package
from encoder_serve.tokenization import load_tokenizer
sequential_tokenizer()
package = load_package("models/emotion")
tokenizer = load_tokenizer(package.tokenizer_path, package.max_length)
before = len(os.listdir("/proc/self/task"))
tokenizer.encode_batch(["i feel happy today and so do my friends"] * 64)
print(os.environ["TOKENIZERS_PARALLELISM"], len(os.listdir("/proc/self/task")) - before)
"""
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    if given is not None:
        env["TOKENIZERS_PARALLELISM"] = given
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env,
                         cwd=Path(__file__).resolve().parents[2]).stdout.split()
    assert out[0] == (given or "false")
    assert (int(out[1]) > 0) == pool, out
