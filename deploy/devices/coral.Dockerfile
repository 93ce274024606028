# The agent with the Coral Edge TPU runtime (libedgetpu), on Debian 12 (bookworm), amd64 or arm64.
#   docker build -f deploy/devices/coral.Dockerfile .
# libedgetpu1-std comes from Google's Coral apt repository, checked with its signing key; the
# version is pinned (LIBEDGETPU_VERSION). "std" runs the TPU at its standard clock ("max" runs hotter).
# The PyPI package named `pycoral` is unrelated and must never be installed here.
FROM python:3.11.10-slim-bookworm

ARG LIBEDGETPU_VERSION=16.0
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl gnupg \
    && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
       | gpg --dearmor -o /usr/share/keyrings/coral-edgetpu.gpg \
    && echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
       > /etc/apt/sources.list.d/coral-edgetpu.list \
    && apt-get update \
    && apt-get install -y --no-install-recommends "libedgetpu1-std=${LIBEDGETPU_VERSION}" \
    && apt-get purge -y curl gnupg && apt-get autoremove -y && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY agent ./agent
COPY controlplane ./controlplane
COPY provisioning ./provisioning
RUN pip install '.[agent]' \
    && useradd --system --home-dir /var/lib/edgefleet --shell /usr/sbin/nologin \
       --groups plugdev edgefleet \
    && mkdir -p /var/lib/edgefleet /etc/edgefleet && chown edgefleet /var/lib/edgefleet

USER edgefleet
VOLUME ["/var/lib/edgefleet"]
EXPOSE 8500
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8500/v2/health/ready', timeout=4)"]
ENTRYPOINT ["edgefleet-agent"]
CMD ["--config", "/etc/edgefleet/agent.toml", "--listen", "0.0.0.0:8500", "--backends", "edgetpu,litert"]
