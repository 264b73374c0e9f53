"""Everything that speaks gRPC: the server, its servicer, caller authentication, the one
map from domain errors to status codes, and the observer of every RPC.

:mod:`~authority.api.server` has :func:`create_server` and :func:`serve`;
:mod:`~authority.api.servicer` turns protobuf into one domain call and back;
:mod:`~authority.api.callers` admits callers by TLS certificate or API key;
:mod:`~authority.api.status` maps errors to statuses; :mod:`~authority.api.observe`
counts, times and logs each RPC; :mod:`~authority.api.answers` builds a warm token's
reply parts once; :mod:`~authority.api.loops` picks the event loop ``serve`` runs on, and
:mod:`~authority.api.heap` freezes its start-up heap out of garbage collection.

May import :mod:`authority.ops`, the domain, the store and the bottom layer; never the
command line. No SQL and no JWT options here.
"""
