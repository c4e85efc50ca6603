"""The contract suites: one pytest suite per interface, run over every implementation.

Subclass one in a `Test...` class of your own tests and provide the fixtures its module
docstring names; every test of the suite then runs against your implementation:

    from modelferry.testing.contracts.store import PackageStoreContract

    class TestMyStore(PackageStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path)

- `delivery.DeliveryTransportContract`: a `DeliveryChannel` with its `DeviceTransport`
  (see `modelferry.delivery.channels.base`).
- `endpoint.EndpointBackendContract`: an `EndpointBackend`.
- `store.PackageStoreContract`: a `PackageStore`.

The suites need pytest (in the `dev` extra, or your own test dependencies); importing
them without it raises `MissingExtraError`. Their asserts are rewritten by pytest, so a
failing check shows the values compared.
"""

from modelferry.extras import requires_extra

with requires_extra("dev", "modelferry.testing.contracts", "pytest"):
    import pytest

# Before the suites are imported: only then can pytest rewrite their asserts.
pytest.register_assert_rewrite(
    "modelferry.testing.contracts.delivery",
    "modelferry.testing.contracts.endpoint",
    "modelferry.testing.contracts.store",
)
