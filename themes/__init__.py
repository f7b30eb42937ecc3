"""Themes of the hicl TUI as data (shipped in the wheel as hicl_app._themes)."""
