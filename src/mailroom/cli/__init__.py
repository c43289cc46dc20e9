"""The ``mailroom`` command: argument parsing and output formatting only, calling
operator/ for the work. One module per command group: commands (the parser, migrate,
run, config, check, demo, token), ops (the operator commands' parsers), messages
(status, show, send-test, find, cancel, send-now), dead, stats (queues, stats, status
--watch), suppression, check (check --schema); common (fail, load, connect, handler),
args (argument types, help) and output (reveal, confirmation, progress) are shared.

May import everything else in the package (operator, daemon, events, config, web
lazily); nothing but ``mailroom.__main__`` should import cli. Within cli, commands
imports ops, the command modules import common, args and output; no circle
(tests/test_layout.py).
"""
