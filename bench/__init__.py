"""`make bench`: the lab's receivers and sender side by side with DCMTK (and Orthanc).

A benchmark, not a test: it measures and prints; only the smoke test under
``tests/bench`` runs it (on a tiny series) to prove it works.
"""
