"""``python -m bot`` is the ``persona-bridge`` command."""

import sys

from bot.cli import main

sys.exit(main())
