"""Use cases shared by the CLI, the TUI and the demo: they check input, then call the catalog."""
