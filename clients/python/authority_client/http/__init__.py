"""Access tokens on HTTP: the header rules every HTTP surface shares, and middleware.

- :mod:`authority_client.http.bearer`: reads the token from the ``Authorization``
  header (RFC 6750 ``Bearer``, RFC 9449 ``DPoP`` with its one ``DPoP`` proof header) and
  builds every refusal: status, ``WWW-Authenticate`` challenge and JSON body. The
  authority's Envoy external authorization uses it too.
- :mod:`authority_client.http.gate`: public paths, the audience, the external origin a
  proof's ``htu`` names, and what a validation failure is answered with; shared by both
  middlewares.
- :mod:`authority_client.http.asgi`: middleware for Starlette, FastAPI and any ASGI app
  (install the ``asgi`` extra only for the frameworks themselves; the middleware needs none).
- :mod:`authority_client.http.wsgi`: middleware for Flask, Django and any WSGI app.

This package imports no web framework: the middlewares speak plain ASGI and WSGI.
"""
