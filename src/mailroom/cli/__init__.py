"""The ``mailroom`` command: argument parsing (commands, ops, args) and what the command
modules share (common: fail, load, connect, handler), calling operator/ for the work; the
formatting it shares with the layers below is in mailroom.text and operator.output.

May import everything else in the package (operator, daemon, events, config, web
lazily); nothing but ``mailroom.__main__`` should import cli. Within cli, commands
imports ops, both import common; no circle (tests/test_layout.py).
"""
