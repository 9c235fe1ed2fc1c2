"""Federation scenarios and runners over Flower's simulation engine, and their reports."""
