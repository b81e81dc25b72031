# syntax=docker/dockerfile:1
# streamsync: one image for every role (capture, sink, backfill-worker, run, admin commands).
#   docker build -t streamsync .
#   docker run --rm streamsync --help

# ---- build: install the package and its dependencies into a virtualenv ------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/streamsync
WORKDIR /src
# Dependencies first (cached while only the source changes).
COPY pyproject.toml README.md ./
RUN mkdir streamsync && touch streamsync/__init__.py \
 && /opt/streamsync/bin/pip install . \
 && /opt/streamsync/bin/pip uninstall -y streamsync
COPY streamsync ./streamsync
RUN /opt/streamsync/bin/pip install --no-deps . \
 && /opt/streamsync/bin/streamsync --help >/dev/null

# ---- runtime: slim, non-root, no compilers ----------------------------------------------
FROM python:3.11-slim
RUN groupadd --system --gid 10001 streamsync \
 && useradd --system --uid 10001 --gid streamsync --no-create-home \
      --home-dir /var/lib/streamsync --shell /usr/sbin/nologin streamsync \
 && install -d -o streamsync -g streamsync /var/lib/streamsync /etc/streamsync
COPY --from=build /opt/streamsync /opt/streamsync
ENV PATH=/opt/streamsync/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# Writable state (backfill work_dir); mount a volume or an emptyDir here.
WORKDIR /var/lib/streamsync
USER 10001:10001
# The ops port: /healthz, /readyz, /metrics.
EXPOSE 8080
ENTRYPOINT ["streamsync"]
CMD ["--help"]
