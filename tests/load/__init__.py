"""Load and fault scenarios: the library under gunicorn, many clients at once, and
database servers of the run's own that are restarted mid-load.

See ``docs/reliability.rst`` for the method, the figures and the commands.
"""
