"""Alembic migrations of the hicl catalog (shipped in the wheel as hicl_app._migrations)."""
