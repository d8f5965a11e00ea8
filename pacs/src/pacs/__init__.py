"""DICOM Lab PACS receiver: a Storage and Verification SCP that decides every
association from the registry (Redis) and stores instances durably.

Where each part lives, one line per module: pacs/README.md.
"""

__version__ = "0.1.0"
