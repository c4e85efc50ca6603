"""Serve the deployments without a work pool, run the team servers, run one from CI."""

from flows.library_logs import send_library_logs_to_runs
from modelferry.telemetry_opt_out import opt_out_of_telemetry

# Before any deployments module imports Prefect or MLflow: both read these once, at
# import, and the flow runs a served deployment starts inherit them.
opt_out_of_telemetry()
send_library_logs_to_runs()
