"""The exec runner: serves algomesh.v1.Runner for any executable that reads one JSON
document per line on stdin and writes one per line on stdout (docs/exec.md)."""
