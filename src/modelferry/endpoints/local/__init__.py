"""The local endpoint backend: one server process per endpoint on this machine."""

from modelferry.endpoints.local.backend import LocalEndpointBackend

__all__ = ["LocalEndpointBackend"]
