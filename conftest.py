"""Root conftest: registers siplab's pytest plugin (fixtures ``lab``, ``faults``; options
``--lab-backend``, ``--router``, ``--time-scale``)."""

pytest_plugins = ["lab.pytest_plugin"]
