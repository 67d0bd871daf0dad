"""pagerduty_connector: a PagerDuty connector component and the runtime that executes it.

The repository root is this package (``package-dir`` in ``pyproject.toml``), so the
top-level folders install as ``pagerduty_connector.component``, ``.runtime``,
``.connections``, ``.triggers``, ``.actions`` and ``.datasources``, and
``manifest.yaml`` ships beside them as package data.
"""
