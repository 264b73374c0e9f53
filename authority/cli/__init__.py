"""The ``authority`` command line and its subcommands.

:mod:`~authority.cli.main` parses the command line and runs ``serve``, ``migrate``,
``config`` and ``api-key``; :mod:`~authority.cli.keys` the ``keys`` commands on the
database; :mod:`~authority.cli.admin` the ``token`` and ``sessions`` commands, which drive
a running authority through :mod:`~authority.cli.admin_client`; :mod:`~authority.cli.demo`
the single-device scenario. Nothing here holds logic beyond parsing and printing.

May import every layer below it; nothing imports it.
"""

from authority.cli.main import main

__all__ = ["main"]
