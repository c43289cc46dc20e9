"""The ``mailroom`` command: argument parsing (commands, ops, args), calling operator/
for the work; the formatting it shares with the layers below is in mailroom.text and
operator.output.

May import everything else in the package (operator, daemon, events, config, web
lazily); nothing but ``mailroom.__main__`` should import cli. Still to cut: the circle
commands <-> ops.
"""
