"""CKKS secure aggregation: HE parameters, key files, update codec and ciphertext sums (TenSEAL)."""
