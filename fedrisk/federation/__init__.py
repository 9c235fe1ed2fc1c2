"""Federation concepts shared by parties and coordinator: run config, protocol names, roster,
processes."""
