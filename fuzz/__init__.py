"""Structural fuzzing of a live PACS (`make fuzz`): see fuzz/run.py and README "Fuzzing"."""
