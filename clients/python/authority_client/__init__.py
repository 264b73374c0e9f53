"""What consumer services of the token authority install.

The generated gRPC stubs for ``authority.v1`` live in :mod:`authority_client.v1`.
"""
