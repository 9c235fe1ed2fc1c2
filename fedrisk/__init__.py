"""fedrisk core: credit-data schemas, datasets, features, models, metrics, decisions and artifacts."""

__version__ = "0.1.0"
