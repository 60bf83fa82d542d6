"""Test helpers shared by the test suite (tolerance tiers, random inputs)."""
