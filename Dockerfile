# Sluice, non-root, no build tools in the final image:
#   docker build -t registry.example.com/sluice:0.1.0 .
# Checked by hadolint (tests/kube/test_manifests.py).

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
RUN python -m venv /opt/sluice \
    && /opt/sluice/bin/pip install --no-cache-dir "grpcio-tools==1.85.1"
COPY pyproject.toml README.md ./
COPY proto ./proto
COPY controlplane ./controlplane
COPY xds ./xds
COPY analysis ./analysis
# The xDS envelope views (DESIGN §4) are generated from our own .proto, as `make` does.
RUN /opt/sluice/bin/python -m grpc_tools.protoc -Iproto --python_out=xds/_wire \
        --pyi_out=xds/_wire proto/sluice/wire/v1/wire.proto \
    && mv xds/_wire/sluice/wire/v1/wire_pb2.py xds/_wire/wire_pb2.py \
    && mv xds/_wire/sluice/wire/v1/wire_pb2.pyi xds/_wire/wire_pb2.pyi \
    && rm -rf xds/_wire/sluice \
    && /opt/sluice/bin/pip install --no-cache-dir . \
    && /opt/sluice/bin/pip uninstall --yes grpcio-tools

FROM python:3.11-slim-bookworm
LABEL org.opencontainers.image.title="sluice" \
      org.opencontainers.image.description="xDS control plane and canary analysis for LLM serving"
ENV PATH=/opt/sluice/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
COPY --from=build /opt/sluice /opt/sluice
# 65532: "nonroot"; the root filesystem can be read-only (only /tmp is written).
USER 65532:65532
EXPOSE 18000 19000
ENTRYPOINT ["sluice"]
CMD ["serve", "--kubernetes"]
