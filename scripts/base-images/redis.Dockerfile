# Stand-in for the official redis image, built from Debian bookworm's redis-server.
# Like the official image: redis-server on PATH, data in /data, runs as the redis user.
ARG MINBASE_IMAGE=dicomlab-base/debian:bookworm-minbase
FROM ${MINBASE_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--dir", "/data"]
