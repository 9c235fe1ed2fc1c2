"""Party node: the Flower ClientApp, party configuration and local data source."""
