"""Aggregation server: the Flower ServerApp, the encrypted strategy and coordinator logic."""
