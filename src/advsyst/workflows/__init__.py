"""Workflows: adversarial detector, two-pass coffea flow, the demo."""
