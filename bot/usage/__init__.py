"""Usage ledger and budgets (SPEC §12): who spent what, with which persona, on which model."""
