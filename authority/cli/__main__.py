"""``python -m authority.cli``: the same as the ``authority`` command."""

import sys

from authority.cli.main import main

sys.exit(main())
