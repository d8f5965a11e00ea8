# Stand-in for python:3.11-slim, built from Debian bookworm packages (no image registry needed).
# What the service Dockerfiles expect of their base: python / python3 / pip on PATH, a working
# `python -m venv`, pip that installs as root, and TLS that trusts this site's CA bundle.
ARG MINBASE_IMAGE=dicomlab-base/debian:bookworm-minbase
FROM ${MINBASE_IMAGE}
ENV LANG=C.UTF-8 \
    DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv python3-pip python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED \
 && ln -sf /usr/bin/pip3 /usr/local/bin/pip
# The host's CA bundle (it may hold a site CA that a TLS-inspecting proxy signs with).
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
CMD ["python3"]
