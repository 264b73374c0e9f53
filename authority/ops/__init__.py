"""Operations: the Prometheus metrics (:mod:`~authority.ops.metrics`) and the log output,
one line per RPC (:mod:`~authority.ops.logs`).

Sits between the gRPC edge, which records into it, and the domain, which the metrics read
at scrape time. May import the domain, the store and the bottom layer; never
:mod:`authority.api` or :mod:`authority.cli`.
"""
