"""Pure verdicts on observed state: drift (exact ownership) and isolation (live selection)."""
