"""The benchmark's smoke mode runs in CI so it never rots (its figures are judged from full runs)."""
import json
import math
import subprocess
import sys
from pathlib import Path

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
