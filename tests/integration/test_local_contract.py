"""The shared endpoint contract, against the local backend's real server processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from modelferry.endpoints.local import LocalEndpointBackend
from modelferry.endpoints.spec import ModelRef
from modelferry.testing.contracts.endpoint import EndpointBackendContract
from tests import model_fixtures

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalEndpointBackend]:
    home = tmp_path_factory.mktemp("local-contract")
    settings = model_fixtures.register_versions(home)
    backend = LocalEndpointBackend(home / "endpoints", settings)
    yield backend
    for state in backend.list_endpoints():
        backend.delete_endpoint(state.name)


class TestLocalContract(EndpointBackendContract):
    @pytest.fixture
    def backend(self, local_backend: LocalEndpointBackend) -> LocalEndpointBackend:
        return local_backend

    @pytest.fixture
    def model_refs(self) -> tuple[ModelRef, ModelRef]:
        name = model_fixtures.MODEL_NAME
        return ModelRef(name, version="1"), ModelRef(name, version="2")

    @pytest.fixture
    def score_payload(self) -> dict[str, Any]:
        return model_fixtures.score_payload()
