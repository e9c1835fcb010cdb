# syntax=docker/dockerfile:1
# cjflow image: both flows, the migration and topic jobs, and the embedded CLI.
# Build: docker build -t registry.example.com/cjflow:0.1.0 .   (docs/deploy.md, "Build")
# Pin the base by digest in production:
#   docker build --build-arg BASE_IMAGE=python:3.11.11-slim-bookworm@sha256:<digest> ...
# Bytewax 0.21.1 ships wheels for CPython <= 3.12 on manylinux x86_64 only: build for linux/amd64.
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies come from pyproject.toml ([project].dependencies); binary wheels only, so the
# image needs no compiler.
COPY pyproject.toml README.md ./
COPY cj/ cj/
COPY judges/ judges/
COPY operators/ operators/
COPY sinks/ sinks/
COPY flows/ flows/
COPY schemas/ schemas/
COPY telemetry/ telemetry/
COPY bench/ bench/
RUN /opt/venv/bin/pip install --only-binary=:all: --upgrade pip \
 && /opt/venv/bin/pip install --prefer-binary . \
 && /opt/venv/bin/pip check

FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="cjflow" \
      org.opencontainers.image.description="Comparative Judgement of essays with LLM judges, as Bytewax dataflows" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid so Kubernetes can check runAsNonRoot (deploy/k8s uses 10001).
RUN groupadd --system --gid 10001 cjflow \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin cjflow
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib
# Writable at run time (the root filesystem is read-only in Kubernetes): /tmp (emptyDir) and
# the recovery directory (a PersistentVolume).
RUN mkdir -p /var/lib/cjflow/recovery && chown 10001:10001 /var/lib/cjflow/recovery
WORKDIR /var/lib/cjflow
USER 10001:10001
# 2101: Bytewax cluster traffic; 9464: /metrics (CJFLOW_METRICS_PORT)
EXPOSE 2101 9464
ENTRYPOINT ["cjflow"]
CMD ["--help"]
