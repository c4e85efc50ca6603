"""Prefect block: an online endpoint's scoring URL and key, for the clients that call it."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import ConfigDict, Field, SecretStr


class EndpointKey(Block):
    """Where an online endpoint scores and the key it wants, kept secret.

    `deploy-online-endpoint` writes one after a rollout when given `key_block`, so batch
    jobs and services read the current URL and key from Prefect instead of a config file:

        key = EndpointKey.load("breast-cancer-classifier")
        httpx.post(key.scoring_uri, headers=key.headers(), json=payload)
    """

    _block_type_name = "modelferry Endpoint Key"
    _block_type_slug = "modelferry-endpoint-key"
    _description = "An online endpoint's scoring URI and its key (Authorization: Bearer)."
    model_config = ConfigDict(hide_input_in_errors=True)

    endpoint: str = Field(description="The endpoint's name.")
    scoring_uri: str = Field(description="POST requests here.")
    key: SecretStr = Field(description="The endpoint's primary key.")

    def headers(self) -> dict[str, str]:
        """The request headers that authenticate a scoring call."""
        return {"Authorization": f"Bearer {self.key.get_secret_value()}"}
