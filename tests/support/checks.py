"""CheckRequests as Envoy sends them to an external authorization service."""

from __future__ import annotations

from envoy.service.auth.v3 import attribute_context_pb2 as attributes
from envoy.service.auth.v3 import external_auth_pb2 as ext


def check_request(
    *authorization: str, path: str = "/orders", audience: str | None = None, raw: bool = True,
    extra: tuple[tuple[str, str], ...] = (),
) -> ext.CheckRequest:
    """A CheckRequest as Envoy sends it: headers raw, one per line (``encode_raw_headers``),
    or in the map, where Envoy joins repeated headers with commas."""
    http = attributes.AttributeContext.HttpRequest(method="GET", path=path, host="app.test", protocol="HTTP/1.1")
    headers = [*(("authorization", value) for value in authorization), *extra]
    if raw:
        for key, value in headers:
            http.header_map.headers.add(key=key, raw_value=value.encode())
    else:
        for key, value in headers:
            http.headers[key] = f"{http.headers[key]},{value}" if key in http.headers else value
    context = attributes.AttributeContext(request=attributes.AttributeContext.Request(http=http))
    if audience is not None:
        context.context_extensions["audience"] = audience
    return ext.CheckRequest(attributes=context)
