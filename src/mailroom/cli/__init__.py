"""The ``mailroom`` command: argument parsing and output formatting only, calling
operator/ for the work. One module per command group, each holding its commands' parsers
beside their handlers: commands (the top parser, migrate, run, config, demo), check
(check, --ses, --schema), token (sign, verify), stats (status [--watch], queues, stats),
messages (show, send-test, find, and the status text), actions (cancel, send-now), dead,
suppression, queue (pause, resume), web; common (fail, load, connect, handler), args (the
parser class, option groups, argument types, help) and output (reveal, confirmation,
progress) are shared.

May import everything else in the package (operator, daemon, events, config, web
lazily); nothing but ``mailroom.__main__`` should import cli. Within cli, commands
imports the command modules, which import common, args and output; no circle
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
