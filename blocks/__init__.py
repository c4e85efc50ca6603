"""Prefect blocks: typed configuration and credentials (secrets as SecretStr) for the flows."""

#: Every module holding modelferry block types, registered by `python -m blocks`.
BLOCK_MODULES = (
    "blocks.mlflow_tracking",
    "blocks.azure_credentials",
    "blocks.azureml_workspace",
    "blocks.package_store",
    "blocks.delivery_channel",
    "blocks.signing_key",
    "blocks.endpoint_key",
    "blocks.notifications",
)
