"""python -m bench's ratios (bench/_report.py) from given figures: Ray Serve's fastest is
judged only when every Ray path was measured, and the native paths get the mTLS floor's
ratios without a target."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import _report  # noqa: E402


def path(kind, processes, p50_ms, calls_per_s, cpu_us, stages=1, sidecar_mib=None):
    rss = {"sidecar x": sidecar_mib} if sidecar_mib is not None else {"proc": 40.0}
    return {"kind": kind, "processes": processes, "stages": stages, "p50_us": p50_ms * 1000,
            "calls_per_s": calls_per_s, "cpu_us_per_call_servers": cpu_us, "rss_idle_mib": rss, "rss_load_mib": rss}


def figures(**ray):
    paths = {
        "bare1": path("bare", 1, 0.4, 7000, 130),
        "bare3": path("bare", 3, 1.4, 1600, 850),
        "bare_tls3": path("bare_tls", 3, 1.5, 1500, 900, stages=3),
        "native3": path("native", 3, 0.75, 4800, 220, stages=3),
        "mesh3": path("algomesh", 3, 2.4, 850, 1700, stages=3, sidecar_mib=55.0),
    }
    paths.update(ray)
    return paths


def by_name(paths, skipped):
    return {r["name"]: r for r in _report.ratios(paths, {}, skipped)}


def test_ray_s_fastest_is_the_best_over_every_ray_path():
    r = by_name(figures(ray_default_http=path("ray", None, 13.0, 18, 24000, stages=3),
                        ray_fast_http=path("ray", None, 2.5, 500, 3000, stages=3)), {})
    assert r["mesh3.throughput_vs_ray"]["value"] == 850 / 500
    assert r["mesh3.throughput_vs_ray"]["met"] is False and "(ray_fast_http)" in r["mesh3.throughput_vs_ray"]["note"]
    assert r["mesh3.p50_vs_ray"]["value"] == 2.4 / 2.5 and r["mesh3.p50_vs_ray"]["met"] is False


def test_with_a_ray_path_missing_ray_s_fastest_is_not_judged():
    """The throughput-optimized cluster did not start: the default configuration's 18 calls/s
    must not make algomesh '47x Ray Serve's fastest'."""
    why = "the Ray cluster did not start: Ray Serve (throughput) exited with code 1 before 'http'"
    skipped = {"ray_fast_http": why, "ray_fast_handle": why}
    r = by_name(figures(ray_default_http=path("ray", None, 13.0, 18, 24000, stages=3)), skipped)
    for name in ("mesh3.throughput_vs_ray", "mesh3.p50_vs_ray"):
        assert r[name]["value"] is None and r[name]["met"] is None, r[name]
        assert r[name]["target"] is not None  # still a target: NOT MEASURED, not MET
        assert "not judged, ray_fast_http was not measured: " + why in r[name]["note"]
    assert "against the Ray paths measured: 47.22x, 850 vs 18 calls/s (ray_default_http)" in \
        r["mesh3.throughput_vs_ray"]["note"]
    assert r["native3.throughput_vs_ray"]["value"] is None  # the same for the paths with no target


def test_the_native_floor_has_the_mtls_floor_s_ratios_and_no_target():
    r = by_name(figures(), {"ray_default_http": "--no-ray"})
    hop = r["native3.hop_cpu"]
    assert hop["value"] == (220 - 130) / (850 - 130) and hop["target"] is None and hop["met"] is None
    assert r["native3.throughput_vs_abc_tls"]["value"] == 4800 / 1500
    assert r["native3.throughput_vs_abc"]["target"] is None
    assert "bare_tls3.throughput_vs_abc_tls" not in r  # the mTLS floor is not set against itself
    assert r["mesh3.throughput_vs_abc"]["target"] == ">= 0.5" and r["mesh3.throughput_vs_abc"]["met"] is True
