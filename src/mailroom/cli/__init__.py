"""The ``mailroom`` command: argument parsing (commands, ops, args), what the command
modules share (common: fail, load, connect, handler) and output formatting (output),
calling operator/ for the work.

May import everything else in the package (operator, daemon, events, config, web
lazily); nothing but ``mailroom.__main__`` should import cli. Within cli, commands
imports ops, both import common; no circle (tests/test_layout.py). Still to cut: operator,
web and daemon.presence importing output and args.
"""
