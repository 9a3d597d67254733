"""The Python runner: serves algomesh.v1.Runner for an algorithm written in Python.

An algorithm is a module with ``apply(input)`` and, optionally, ``load()``; ``load()``
runs once per instance before the first call. If ``apply`` takes two arguments, the
second is what ``load()`` returned.
"""
