"""Party node: the Flower ClientApp, party configuration and local data source."""

__distribution__ = "fedrisk"  # marker: fedrisk.distribution refuses a package without it

from fedrisk.distribution import require_own_packages

# Before any party code imports secure_agg: refuse another project's package of that name.
require_own_packages(("secure_agg",))
