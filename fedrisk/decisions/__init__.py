"""Lending decisions: scorecard scaling, reason codes, lifecycle policies and anti-fraud."""
