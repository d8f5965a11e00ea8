"""DICOM Lab crash soak (``make soak``, ``python -m soak``): see soak/run.py and README.md."""
