"""The lifecycle as Prefect flows; each module runs on its own with `python -m flows.NAME`."""

from flows.library_logs import send_library_logs_to_runs
from modelferry.telemetry_opt_out import opt_out_of_telemetry

# Before any flow module imports Prefect or MLflow: both read these once, at import.
opt_out_of_telemetry()
send_library_logs_to_runs()
