"""The TUI's screens: dashboard, run detail, comparison, and the modal forms."""
