"""Local mode: what a consumer keeps in its own process to validate tokens without a call.

:mod:`~authority_client.local.keys` holds the signing keys,
:mod:`~authority_client.local.mirror` the live revocations and how fresh they are,
:mod:`~authority_client.local.follow` keeps both current from the WatchRevocations
stream, and :mod:`~authority_client.local.verified` remembers tokens verified in full.
:mod:`authority_client.validation` puts them together behind the same gate as remote mode.

May import the rest of the client package below it (verify, types, errors, the stubs);
like every part of the client package, never :mod:`authority`.
"""
