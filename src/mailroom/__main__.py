"""``python -m mailroom``: the ``mailroom`` command (mailroom.cli.commands.main)."""

import sys

from mailroom.cli.commands import main

sys.exit(main())
