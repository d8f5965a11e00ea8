"""DICOM Lab shared package.

One module per concern, each the only owner of it:

- ``aetitle``   AE-title and host rules (PS3.5 AE value representation)
- ``keys``      the Redis key schema (every key name lives here and nowhere else)
- ``registry``  the node registry, listener settings, study index, job queue
- ``settings``  environment configuration and listener settings records
- ``events``    event records, the bounded Redis stream and the stdout line
- ``errors``    the error hierarchy
- ``dicom``     DICOM constants shared by the services (UIDs, status and RJ codes)
"""

__version__ = "0.1.0"
