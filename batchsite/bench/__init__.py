"""Benchmark scenarios run by `manage.py benchmark`, each in a throw-away database.

The parent process (the command, with `harness`) starts one child process per scenario
with its own DATABASE_URL, data dir and queue name; the child migrates the fresh database,
runs the scenario (`scenarios`, with the qclusters and web server of `processes`, and on
PostgreSQL the lock-wait sampler of `lockwait`) and prints one JSON line. Figures are
compared as ratios within one run, since absolute times on shared machines are not stable.
"""
