# Cairn in a container: the prebuilt release binary on Debian 12 slim.
#
# NOT BUILT AND NOT TESTED: the machines Cairn is developed on have no Docker engine, so this
# file has never been through `docker build`. See docs/operations.md, "The container image".
#
# Build the binary first, on Debian 12 (the binary links glibc dynamically; the image has 2.36),
# then the image. .dockerignore keeps the build context to that one file.
#
#   cargo build --release --locked
#   docker build -t registry.example.com/platform/cairn:0.1.0 .
FROM debian:bookworm-slim

# ca-certificates: TLS roots for the S3, Azure and GCS endpoints (rustls with the system store).
# No openssh-client: Cairn speaks SSH itself (russh) and runs no local program.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# A numeric non-root user, so Kubernetes' runAsNonRoot can check it.
RUN groupadd --gid 10001 cairn \
 && useradd --uid 10001 --gid cairn --home-dir /home/cairn --create-home \
      --shell /usr/sbin/nologin cairn

COPY target/release/cairn /usr/local/bin/cairn
# Scripts and pipelines that call bbr keep working.
RUN ln -s cairn /usr/local/bin/bbr

USER 10001:10001
# bbr-<time>.err.log is written to the working directory after a failed run.
WORKDIR /home/cairn
ENTRYPOINT ["cairn"]
CMD ["help"]
