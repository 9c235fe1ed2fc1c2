"""Aggregation server: the Flower ServerApp, the encrypted strategy and coordinator logic."""

__distribution__ = "fedrisk"  # marker: fedrisk.distribution refuses a package without it

from fedrisk.distribution import require_own_packages

# Before the coordinator imports secure_agg: refuse another project's package of that name.
require_own_packages(("secure_agg",))
