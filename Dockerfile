# syntax=docker/dockerfile:1
# Container images of netaware, one target per binary:
#   docker build --target agent      -t ghcr.io/netaware/netaware-agent:0.1.0 .
#   docker build --target aggregator -t ghcr.io/netaware/netaware-aggregator:0.1.0 .
#   docker build --target cli        -t ghcr.io/netaware/netaware:0.1.0 .
# The tag should be the chart's appVersion (charts/netaware/Chart.yaml).
# CI builds the same images without a container engine (scripts/images.sh,
# static musl binaries, docs/install.md#images); a test in images/ keeps the
# binaries' paths, the user, the entrypoints and the agent's capability here
# equal to those.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p netaware-agent -p netaware-aggregator -p netaware-cli

# The agent opens raw ICMP sockets as a non-root user: the binary carries
# CAP_NET_RAW as a file capability (the pod adds NET_RAW to its bounding
# set and, for the file capability to apply, allows privilege escalation;
# the chart does both only when ICMP probing is on).
FROM debian:bookworm-slim AS agent
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/netaware-agent /usr/local/bin/netaware-agent
RUN setcap cap_net_raw+ep /usr/local/bin/netaware-agent \
    && apt-get purge -y libcap2-bin && apt-get autoremove -y
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/netaware-agent"]

# glibc and libgcc only, no shell, non-root.
FROM gcr.io/distroless/cc-debian12:nonroot AS aggregator
COPY --from=build /src/target/release/netaware-aggregator /usr/local/bin/netaware-aggregator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/netaware-aggregator"]

FROM gcr.io/distroless/cc-debian12:nonroot AS cli
COPY --from=build /src/target/release/netaware /usr/local/bin/netaware
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/netaware"]
