"""Benchmarks for algomesh (``python bench/hop.py``); results go to bench/results/ (git-ignored)."""
