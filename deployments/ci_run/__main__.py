"""`python -m deployments.ci_run`: see the package docstring."""

import sys

from deployments.ci_run.command import main

sys.exit(main())
