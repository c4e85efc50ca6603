"""Serve the deployments without a work pool, run the team servers, run one from CI."""

from modelferry.telemetry_opt_out import opt_out_of_telemetry

# Before any deployments module imports Prefect or MLflow.
opt_out_of_telemetry()
