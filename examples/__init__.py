"""The example configs (YAML), shipped with the package so that a wheel runs the quickstart."""
