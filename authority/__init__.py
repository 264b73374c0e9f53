"""The token authority server: one place that signs users in on one device at a time,
checks their tokens and signs them out.

The folders draw the layers; each may import only those below it (import-linter keeps it
so, see ``[tool.importlinter]`` in pyproject.toml):

- :mod:`authority.cli` and :mod:`authority.testing`: the ``authority`` command, and an
  in-process authority for tests;
- :mod:`authority.api`: everything that speaks gRPC;
- :mod:`authority.ops`: metrics and logs;
- the domain, at the top of this package: :mod:`~authority.app` (the wiring),
  :mod:`~authority.sessions`, :mod:`~authority.validation`, :mod:`~authority.revocations`,
  :mod:`~authority.tokens`, :mod:`~authority.keys`;
- :mod:`authority.store`: every query and the migrations;
- at the bottom, for every layer: :mod:`~authority.config`, :mod:`~authority.credentials`
  and :mod:`~authority.errors`.
"""
