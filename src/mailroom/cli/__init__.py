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

import sys

# structlog imports rich (with pygments and attrs: ~4 MiB resident, docs/BENCHMARKS.md)
# at its own import whenever rich is installed, only to render a terminal's tracebacks in
# colour. mailroom's processes render them plain: rich is hidden while structlog loads
# (an entry of None makes its `import rich` fail) and is importable again right after.
if "structlog" not in sys.modules and "rich" not in sys.modules:
    sys.modules["rich"] = None  # type: ignore[assignment]  # the import system's "absent"
    try:
        import structlog  # noqa: F401 -- loaded here, without rich
    finally:
        del sys.modules["rich"]
