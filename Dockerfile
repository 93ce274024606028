# One image for the one-machine system: the control plane (`edgefleet serve`) and the fleet
# simulator (`edgefleet simulate`). Device images (CPU, Coral, Jetson) come with the operations issue.
FROM python:3.11.10-slim-bookworm

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY agent ./agent
COPY controlplane ./controlplane
COPY provisioning ./provisioning
COPY models ./models
RUN pip install '.[agent,controlplane,onnx]' \
    && useradd --system --home-dir /data --shell /usr/sbin/nologin edgefleet \
    && mkdir -p /data && chown edgefleet /data

USER edgefleet
VOLUME ["/data"]
EXPOSE 8080
ENTRYPOINT ["edgefleet"]
CMD ["serve", "--broker", "mqtt://broker:1883", "--listen", "0.0.0.0:8080", "--data-dir", "/data"]
