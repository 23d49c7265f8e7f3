"""`encoder-serve export` and `encoder-serve bench-model` end to end, through the real command line."""

from __future__ import annotations

import json

from encoder_serve.cli import main
from encoder_serve.package import load_package


def test_export_command_writes_a_loadable_package_and_prints_its_summary(tiny_checkpoint, tmp_path, capsys):
    assert main(["export", str(tiny_checkpoint), str(tmp_path / "emotion"), "--version", "3", "--no-int8"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["model"] == "emotion@3"
    assert summary["precisions"]["int8"] == {"servable": False, "reason": "INT8 not built (int8=False)"}
    assert load_package(tmp_path / "emotion").ref == "emotion@3"


def test_export_command_reports_a_missing_checkpoint_in_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nowhere"), str(tmp_path / "pkg")]) == 2
    err = capsys.readouterr().err
    assert "error: checkpoint" in err and "nowhere" in err and "config.json" in err


def test_bench_model_measures_every_engine_and_writes_json_and_plot(tiny_package, tiny_data_dir, tmp_path,
                                                                   capsys):
    assert main(["bench-model", str(tiny_package), "--data", str(tiny_data_dir), "--out", str(tmp_path),
                 "--rounds", "2"]) == 0
    report = json.loads((tmp_path / "bench-model.json").read_text())
    engines = [r["engine"] for r in report["results"]]
    assert engines[0] == "PyTorch fp32" and "ORT INT8 static" in engines and "ORT INT8 dynamic" in engines
    for r in report["results"]:
        assert 0 < r["latency_p50_ms"] <= r["latency_p95_ms"] and r["throughput_texts_per_s"] > 0
        assert r["cpu_ms_per_text"] >= 0 and r["throughput_texts_per_cpu_s"] > 0
    assert (tmp_path / "bench-model.png").stat().st_size > 10_000
    assert "| PyTorch fp32 |" in capsys.readouterr().out
