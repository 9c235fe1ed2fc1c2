"""Model release: signed artifacts and the Ed25519 / X25519 identities that sign them."""
