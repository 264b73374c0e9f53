"""The HTTP listener (``http_listen``): the authority's standard HTTP endpoints, beside
the gRPC port and in the same event loop.

    GET  /.well-known/jwks.json                 the public signing keys (RFC 7517)
    GET  /.well-known/oauth-authorization-server metadata (RFC 8414), for an https issuer
    POST /introspect                            is this access token active? (RFC 7662)
    POST /revoke                                logout by token (RFC 7009)
    GET  /healthz                               what gRPC health says

It is an edge, like :mod:`authority.api`: it may import the domain (``authority.app``,
sessions, validation, tokens), ``authority.ops``, config, credentials and errors, and
never :mod:`authority.api`, which starts and stops it (so the import goes one way).
It holds no rule of its own about tokens or callers: introspection asks the same
:class:`~authority.validation.Validator` as ValidateToken, revocation makes the same
domain call as RevokeToken, callers are identified by the same
:class:`~authority.credentials.CallerRegistry` as on the gRPC port.
"""
