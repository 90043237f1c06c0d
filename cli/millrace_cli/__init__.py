"""The ``millrace`` command a user runs: init, check, backfill, produce, models, secrets.

It imports the library and the services' public entry points only. Development tooling (the
local stack's ``up``, ``down``, ``status``, the demo's ``replay``) adds its commands as a plugin
(see :mod:`millrace_cli.plugins`).
"""
