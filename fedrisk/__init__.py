"""fedrisk core: credit data, features, models, metrics, lifecycle decisions and artifacts."""

__version__ = "0.1.0"
