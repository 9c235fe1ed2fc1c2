"""Machine learning: preprocessing, models, training, metrics and numpy inference."""
