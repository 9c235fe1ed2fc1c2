"""Lender-facing scoring service (FastAPI). Imports the fedrisk core only."""
