"""Age checks: the policy applied at inference (policy) and its fitting on labelled faces (fitting)."""
