# The agent on the CPU (LiteRT with XNNPACK): x86-64 and arm64 from one multi-arch base image.
#   docker buildx build --platform linux/amd64,linux/arm64 -f deploy/devices/cpu.Dockerfile .
# See docs/devices.md for how to run it and what was verified.
FROM python:3.11.10-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY agent ./agent
COPY controlplane ./controlplane
COPY provisioning ./provisioning
RUN pip install '.[agent]' \
    && useradd --system --home-dir /var/lib/edgefleet --shell /usr/sbin/nologin edgefleet \
    && mkdir -p /var/lib/edgefleet /etc/edgefleet && chown edgefleet /var/lib/edgefleet

USER edgefleet
VOLUME ["/var/lib/edgefleet"]
EXPOSE 8500
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8500/v2/health/ready', timeout=4)"]
ENTRYPOINT ["edgefleet-agent"]
CMD ["--config", "/etc/edgefleet/agent.toml", "--listen", "0.0.0.0:8500"]
