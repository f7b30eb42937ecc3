"""The catalog: the single source of truth for tasks, runs, stages, adapters, metrics and jobs."""
