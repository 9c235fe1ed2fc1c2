"""Federation scenarios and runners over Flower's simulation engine, and their reports."""

__distribution__ = "fedrisk"  # marker: fedrisk.distribution refuses a package without it

from fedrisk.distribution import require_own_packages

# The fedrisk CLI (simulations.cli) reaches every role: refuse to start if any of clients, server,
# secure_agg (or this package) is another project's, before a command runs.
require_own_packages()
