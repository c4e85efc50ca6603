"""The lifecycle as Prefect flows; each module runs on its own with `python -m flows.NAME`."""

from modelferry.telemetry_opt_out import opt_out_of_telemetry

# Before any flow module imports Prefect or MLflow.
opt_out_of_telemetry()
