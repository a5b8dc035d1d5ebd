"""First run and day-to-day checks: ``init``, ``doctor`` and ``demo`` (SPEC §3, §13)."""
