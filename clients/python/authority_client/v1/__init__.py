"""Generated stubs for ``authority.v1``; regenerate with ``scripts/gen-protos``."""
