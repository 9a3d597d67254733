"""The README's first command ends in this demo; it must keep working."""
import subprocess
import sys

from tests.conftest import EXAMPLES


def test_quickstart_demo(tmp_path):
    out = subprocess.run([sys.executable, str(EXAMPLES / "quickstart" / "demo.py"), "--port", "0",
                          "--data-dir", str(tmp_path)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.strip().startswith(("positive", "negative", "neutral"))]
    labels = [r[0] for r in rows]
    assert labels == ["positive", "negative", "positive", "neutral", "negative", "positive"], out.stdout
    assert "Answered by demo/sentiment 1.0.0." in out.stdout and "Mesh stopped." in out.stdout
