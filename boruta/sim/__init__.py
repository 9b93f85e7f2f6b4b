"""Simulated dryads and the demo farm."""
