"""The benchmarks' smoke modes run in CI so they never rot (their figures are judged from full
runs, docs/performance.md): `python bench/hop.py --quick` and `python -m bench --smoke`. Here
only that they run, print every line and write every figure; never a timing target."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_hop_benchmark_smoke(tmp_path):
    out_json = tmp_path / "hop.json"
    out = subprocess.run([sys.executable, "-m", "bench.hop", "--quick", "--json", str(out_json)],
                         cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "mesh hop / bare proxy hop" in out.stdout
    result = json.loads(out_json.read_text())
    assert set(result["paths"]) == {"echo", "proxy_echo", "proxy_proxy_echo", "mesh"}
    for name, path in result["paths"].items():
        assert path["p50_us"] > 0 and path["p99_us"] >= path["p50_us"], name
        assert path["calls_per_s"] > 0, name
    assert all(math.isfinite(v) and v > 0 for v in result["ratios"].values())


@pytest.mark.timeout(180)
def test_cpu_command_smoke():
    """`python -m bench.cpu`: every round's line, and each process's median CPU per call."""
    out = subprocess.run([sys.executable, "-m", "bench.cpu", "mesh3_async_shared_direct", "--seconds", "0.5",
                          "--rounds", "2", "--warmup", "20"], cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert out.returncode == 0, out.stdout + out.stderr[-5000:]
    lines = out.stdout.splitlines()
    assert sum(line.startswith("round ") and "calls/s" in line for line in lines) == 2
    medians = {}
    for line in lines[lines.index("median CPU per call over the rounds (us):") + 1:]:
        label, _, value = line.strip().rpartition(" ")
        medians[label.strip()] = float(value)
    assert set(medians) == {"control plane (off the path)", "client", "all",
                            *(f"sidecar bench/stage{n}" for n in (1, 2, 3))}
    assert all(v > 0 for v in medians.values()), medians
    assert medians["all"] >= max(v for k, v in medians.items() if k != "all")


# Every line `python -m bench` prints, whatever it measured (its figures are judged from full runs).
SECTIONS = ("LATENCY AND THROUGHPUT", "PER PROCESS", "STREAMING", "TARGETS (issue 9)")
PATH_KEYS = {"label", "kind", "processes", "stages", "calls", "p50_us", "p99_us", "mean_us", "min_us",
             "first_call_s", "concurrency", "throughput_calls", "throughput_seconds", "calls_per_s",
             "cpu_us_per_call", "cpu_us_per_call_servers", "cpu_us_per_call_client", "rss_idle_mib",
             "rss_load_mib"}
RATIOS = {"mesh1.hop_latency", "mesh1.hop_cpu", "mesh1.sidecar_rss_idle", "mesh1.sidecar_rss_load",
          "mesh3_shared_direct.hop_latency", "mesh3_shared_direct.hop_cpu", "mesh3_shared_direct.throughput_vs_abc",
          "mesh3_async_shared_direct.hop_latency", "mesh3_async_shared_direct.hop_cpu",
          "mesh3_async_shared_direct.throughput_vs_abc",
          "mesh3.hop_latency", "mesh3.hop_cpu", "mesh3.sidecar_rss_idle", "mesh3.sidecar_rss_load",
          "mesh3.throughput_vs_ray", "mesh3.p50_vs_ray", "mesh3.throughput_vs_abc",
          "mesh3_stream.stream_throughput", "mesh3_stream.stream_rss_growth",
          "mesh3_async_stream.stream_throughput", "mesh3_async_stream.stream_rss_growth",
          "mesh3_shared_direct_stream.stream_throughput", "mesh3_async_shared_direct_stream.stream_throughput",
          "mesh3_async_shared_direct_stream.stream_rss_growth"}


@pytest.mark.timeout(300)
def test_side_by_side_benchmark_smoke(tmp_path):
    out_json = tmp_path / "bench.json"
    out_md = tmp_path / "bench.md"
    out = subprocess.run([sys.executable, "-m", "bench", "--smoke", "--json", str(out_json), "--markdown", str(out_md)],
                         cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout + out.stderr[-5000:]
    doc = json.loads(out_json.read_text())
    assert {"benchmark", "date", "command", "duration_s", "load_average", "machine", "config", "paths",
            "streams", "skipped", "ratios"} <= set(doc)
    assert {"cpus", "cpu_model", "kernel", "python", "grpcio", "ray", "bentoml"} <= set(doc["machine"])
    assert doc["config"]["smoke"] and doc["config"]["payload_bytes"] == 100

    # the floor with as many processes as each algomesh path, and the A->B->C chain; the same
    # echo and A->B->C with mutual TLS on every hop
    # and the native proxies where the sidecars are (bench/native_proxy, built with cargo)
    assert set(doc["paths"]) == {"bare1", "bare2", "bare3", "bare7", "bare_tls1", "bare_tls3", "native3", "native7",
                                 "mesh1", "mesh3", "mesh3_async", "mesh1_shared_direct", "mesh3_shared_direct",
                                 "mesh3_async_shared_direct"}, doc["skipped"]
    for key, path in doc["paths"].items():
        assert PATH_KEYS <= set(path), key
        assert path["calls"] == 200 and path["p99_us"] >= path["p50_us"] > 0, key
        assert path["calls_per_s"] > 0 and path["cpu_us_per_call_servers"] > 0, key
        # every process of the path has its CPU and its RSS at rest and under load (a direct
        # client's path also shows the control plane, which takes its spans)
        on_path = [p for p in path["cpu_us_per_call"] if p != "control plane (off the path)"]
        assert len(on_path) == path["processes"], (key, path["cpu_us_per_call"])
        assert set(path["rss_idle_mib"]) == set(path["rss_load_mib"]) == set(path["cpu_us_per_call"]), key
        assert all(v > 1 for v in path["rss_idle_mib"].values()), key
    assert set(doc["paths"]["mesh3"]["cpu_us_per_call"]) == {
        "ingress+control plane", *(f"{kind} bench/stage{n}" for n in (1, 2, 3) for kind in ("runner", "sidecar"))}
    assert set(doc["paths"]["bare_tls3"]["cpu_us_per_call"]) == {"proxy 1", "proxy 2", "echo"}
    assert list(doc["paths"]["native3"]["cpu_us_per_call"]) == ["native proxy 1", "native proxy 2", "echo"]
    assert list(doc["paths"]["native7"]["cpu_us_per_call"]) == [
        "native ingress", "native sidecar 1", "runner 1", "native sidecar 2", "runner 2", "native sidecar 3", "runner 3"]
    assert set(doc["paths"]["mesh3_shared_direct"]["cpu_us_per_call"]) == {
        "control plane (off the path)", *(f"sidecar bench/stage{n}" for n in (1, 2, 3))}

    # Ray and BentoML are skipped in smoke mode, and say so
    for key in ("ray_default_http", "ray_default_handle", "ray_fast_http", "ray_fast_handle", "bentoml_http"):
        assert doc["skipped"][key] == "--smoke"
        assert f"{key:<44} skipped: --smoke" in out.stdout

    # the streams went through the pipelines and bare chains of as many processes; straight
    # to the first shared stage (direct), the control plane is off the stream's path
    processes = {"mesh3_stream": 7, "mesh3_async_stream": 7, "bare7_stream": 7,
                 "mesh3_shared_direct_stream": 4, "mesh3_async_shared_direct_stream": 4, "bare3_stream": 3,
                 "bare_tls3_stream": 3}
    assert set(doc["streams"]) == set(processes)
    for key, s in doc["streams"].items():
        assert s["mib"] == 8 and s["mib_per_s"] > 0, key
        assert "client" in s["rss_growth_mib"] and len(s["rss_growth_mib"]) == processes[key] + 1, key
    assert "control plane (off the path)" in doc["streams"]["mesh3_shared_direct_stream"]["rss_growth_mib"]

    ratios = {r["name"]: r for r in doc["ratios"]}
    assert RATIOS <= set(ratios)
    for name in RATIOS - {"mesh3.throughput_vs_ray", "mesh3.p50_vs_ray"}:
        assert math.isfinite(ratios[name]["value"]) and ratios[name]["met"] in (True, False), name
    assert ratios["mesh3.throughput_vs_ray"]["value"] is None and ratios["mesh3.throughput_vs_ray"]["met"] is None
    # the mTLS floor's own per-hop figures, and each three-stage path against it: no target
    # and so are the native paths' (what a native sidecar could reach at best)
    for name in ("bare_tls3.hop_latency", "bare_tls3.hop_cpu", "mesh3_async_shared_direct.throughput_vs_abc_tls",
                 "native3.hop_latency", "native3.hop_cpu", "native3.throughput_vs_abc_tls",
                 "native7.hop_latency", "native7.hop_cpu", "native7.throughput_vs_abc", "native7.p50_vs_abc_tls",
                 "mesh3_async_shared_direct.p50_vs_abc_tls", "mesh3_async_shared_direct_stream.stream_throughput_vs_tls"):
        assert math.isfinite(ratios[name]["value"]) and ratios[name]["value"] > 0, name
        assert ratios[name]["target"] is None and ratios[name]["met"] is None, name

    for section in SECTIONS:
        assert section in out.stdout
    for r in doc["ratios"]:
        line = next((line for line in out.stdout.splitlines() if line.startswith(r["label"])), None)
        assert line is not None, r["label"]
        if r["target"]:
            assert f"target {r['target']}" in line
            assert ("NOT MEASURED" if r["met"] is None else "NOT MET" if r["met"] is False else "MET") in line
    for path in doc["paths"].values():
        assert any(line.startswith(path["label"]) for line in out.stdout.splitlines()), path["label"]
    assert f"wrote {out_json}" in out.stdout
    md = out_md.read_text()  # the tables for docs/performance.md: every path, stream and ratio
    for path in doc["paths"].values():
        assert f"| {path['label']} | {path['processes']} |" in md
    assert all(f"| {s['label']} |" in md for s in doc["streams"].values())
    assert all(f"| {r['label']}" in md for r in doc["ratios"])
