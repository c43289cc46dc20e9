import sys

from mailroom.cli.commands import main

sys.exit(main())
