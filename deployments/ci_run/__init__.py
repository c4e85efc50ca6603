r"""Start a deployment from a CI pipeline, wait for its run and exit with its outcome.

    python -m deployments.ci_run 'train-and-register/ci' \
        --params-from-env MODELFERRY_PARAM_ --param fail_on_reject=true --watch-timeout 3600

Parameters come from `--param name=value` and, with `--params-from-env PREFIX`, from
environment variables named PREFIX + the parameter name (Azure DevOps exposes the pipeline
variable `modelferry.param.model_name` as `MODELFERRY_PARAM_MODEL_NAME`); `--param` wins.
Values are typed by the deployment's parameter schema, read from the Prefect API: "3"
becomes 3 for an `int`, "true" becomes True for a `bool`, "10,50,100" becomes [10, 50, 100]
for a `list[int]` (a JSON list or object works too), and "" or "null" is None where None
is allowed. An object parameter (`targets`, `rollout`, `fleet`) is given whole as JSON
(`--param 'targets={"store": "..."}'`) or a field at a time, typed by its field's schema:
`--param rollout.strategy=blue-green`, or from the environment
`MODELFERRY_PARAM_ROLLOUT__STRATEGY` (two underscores); a field wins over the whole object.

The CI build id (`BUILD_BUILDID`, else `--build-id`) tags the flow run `ci-build:<id>`, and
`BUILD_BUILDID` / `BUILD_SOURCEVERSION` are set in the run's environment (job variable
`env`), where the lineage tags of a registered model read them.

The run's logs are printed as it goes. Under Azure DevOps (`TF_BUILD`), the run's id, URL
and final state are also set as output variables `FLOW_RUN_ID`, `FLOW_RUN_URL` and
`FLOW_RUN_STATE` for later stages.

Exit codes: 0 Completed (or paused, with `--exit-on-pause`); 1 Failed, Crashed or
Cancelled; 2 bad arguments (unknown deployment; missing, unknown or mistyped parameters);
3 timed out (still running, or paused waiting for approval); 4 the Prefect API could not
be reached or refused the request.
"""

from deployments.ci_run.command import (
    EXIT_API,
    EXIT_COMPLETED,
    EXIT_FAILED,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    main,
)
from deployments.ci_run.parameters import UsageError, map_parameters

__all__ = [
    "EXIT_API",
    "EXIT_COMPLETED",
    "EXIT_FAILED",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "UsageError",
    "main",
    "map_parameters",
]
