"""One module per schema revision of the scoring database, oldest first."""
