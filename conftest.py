"""Root conftest: registers siplab's pytest plugin (fixtures ``lab``, ``faults``; options
``--lab-backend``, ``--router``, ``--time-scale``) and ``lab.requires`` (a missing tool:
skipped locally, a failure in CI)."""

pytest_plugins = ["lab.pytest_plugin", "lab.requires"]
