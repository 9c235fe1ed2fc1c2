"""The aggregation coordinator: ServerApp, strategy, checkpoints, provisioning and the SuperLink."""
