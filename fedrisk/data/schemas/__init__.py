"""Schemas of the bundled real datasets, shipped as TOML package data (one file per dataset)."""
