"""The ``mailroom`` command: argument parsing (commands, ops, args) and output
formatting (output), calling operator/ for the work.

May import everything else in the package (operator, daemon, events, config, web
lazily); nothing but ``mailroom.__main__`` should import cli. Still to cut: the circle
commands <-> ops, and operator, web and daemon.presence importing output and args.
"""
