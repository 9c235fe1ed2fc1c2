"""CKKS secure aggregation: HE parameters, key files, update codec and ciphertext sums (TenSEAL)."""

__distribution__ = "fedrisk"  # marker: fedrisk.distribution refuses a package without it
