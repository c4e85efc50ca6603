"""Run one smoke prediction with a package's scoring script; started by `modelferry.edge.smoke`.

    python smoke_child.py SCORE_PY REQUEST_JSON RESULT_JSON

Loads `SCORE_PY` (with `AZUREML_MODEL_DIR` set by the parent), calls `init()` and then
`run(request)` with the request file's text, and writes `{"result": ...}` or
`{"error": "..."}` to `RESULT_JSON`. It runs in its own process, standard library only,
so a model that crashes, hangs or imports the world cannot take the agent with it.
"""

import importlib.util
import json
import sys
import traceback
from pathlib import Path
from typing import Any


def _plain(value: Any) -> Any:
    # numpy arrays and scalars, and anything else that knows how to become a list.
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"run() returned a {type(value).__name__}, which is not JSON")


def main(score_py: str, request_file: str, result_file: str) -> int:
    """Run the smoke prediction and write its outcome to `result_file`; returns the exit code."""
    sys.dont_write_bytecode = True  # leave the package folder exactly as it was verified
    script = Path(score_py)
    sys.path.insert(0, str(script.parent))
    outcome: dict[str, Any]
    try:
        spec = importlib.util.spec_from_file_location("score", script)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {script.name}")
        module = importlib.util.module_from_spec(spec)
        sys.modules["score"] = module
        spec.loader.exec_module(module)
        module.init()
        result = module.run(Path(request_file).read_text(encoding="utf-8"))
        outcome = {"result": json.loads(json.dumps(result, default=_plain))}
    except BaseException as exc:  # report everything, SystemExit included
        traceback.print_exc()
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
    Path(result_file).write_text(json.dumps(outcome), encoding="utf-8")
    return 0 if "result" in outcome else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
