"""Benchmarks: each prints its figures next to the physical limit or a peer, measured in one run.

Run one from the repository root with ``.venv/bin/python -m bench.<name>``; the figures and the
commands that produced them are recorded in ``docs/benchmarks.md``.
"""
