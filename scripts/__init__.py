"""Maintenance scripts: campaigns, pilots, model-card numbers, goldens, test material (run from the repository root:
python -m scripts.NAME)."""
