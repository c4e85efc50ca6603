"""`python -m modelferry.cli`: the `modelferry` command where the script is not installed."""

import sys

from modelferry.cli import main

sys.exit(main())
