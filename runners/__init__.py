"""Runners: the processes that run algorithm code, one folder per language."""
