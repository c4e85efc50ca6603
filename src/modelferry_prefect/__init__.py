"""The parts of modelferry that run on Prefect's own client library.

`modelferry` itself never imports Prefect, so its core install and the edge agent stay
free of it; what needs Prefect's client lives here and is imported only by the commands
that use it. `pip install 'modelferry[approval]'` installs Prefect alone, for a reviewer's
machine; the `orchestrator` extra includes it too.
"""
