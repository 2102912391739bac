"""Configuration: the ``ZENMETRY_*`` settings, the budget file and the limits table, read and
checked once, at start."""
