"""DICOM Lab CT simulator: the CT modality of the lab.

One module per concern:

- ``phantom``   the synthetic thorax/abdomen in Hounsfield units (numpy, per series)
- ``iod``       CT Image Storage objects: study/series plans, the IOD builder, Part 10 files
- ``syntaxes``  transfer syntaxes the simulator can propose, and pixel-data encoding for them
- ``outcome``   what happened to a send or an echo, in DESIGN.md's words, with the fix
- ``network``   the SCU side of pynetdicom: AE set-up, TCP_NODELAY, misbehaving AE titles
- ``sender``    C-ECHO and C-STORE of generated studies over one or more associations
- ``worker``    the Redis job loop and the Verification SCP on SIM_PORT
- ``bench``     slices/s generated and sent
- ``cli``       the command line (generate, echo, send, worker, bench)
"""

__version__ = "0.1.0"
