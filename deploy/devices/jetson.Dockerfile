# The agent on an NVIDIA Jetson (Orin, JetPack 6.1: L4T r36.4, Ubuntu 22.04, Python 3.10, CUDA 12.6),
# with ONNX Runtime's TensorRT and CUDA providers. Build on the Jetson or with buildx for arm64:
#   docker buildx build --platform linux/arm64 -f deploy/devices/jetson.Dockerfile .
# PyPI has no onnxruntime-gpu for aarch64: the wheel comes from the Jetson AI Lab index for
# JetPack 6 / CUDA 12.6 (ORT_INDEX), pinned by version (ORT_VERSION). Run with `--runtime nvidia`.
FROM nvcr.io/nvidia/l4t-jetpack:r36.4.0

ARG ORT_VERSION=1.20.0
ARG ORT_INDEX=https://pypi.jetson-ai-lab.io/jp6/cu126
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3-pip \
    && rm -rf /var/lib/apt/lists/*

COPY pyproject.toml README.md ./
COPY protocol ./protocol
COPY agent ./agent
COPY controlplane ./controlplane
COPY provisioning ./provisioning
RUN python3 -m pip install --index-url "${ORT_INDEX}" --extra-index-url https://pypi.org/simple \
       "onnxruntime-gpu==${ORT_VERSION}" \
    && python3 -m pip install '.[agent]' \
    && useradd --system --home-dir /var/lib/edgefleet --shell /usr/sbin/nologin \
       --groups video edgefleet \
    && mkdir -p /var/lib/edgefleet /etc/edgefleet && chown edgefleet /var/lib/edgefleet

USER edgefleet
VOLUME ["/var/lib/edgefleet"]
EXPOSE 8500
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8500/v2/health/ready', timeout=4)"]
ENTRYPOINT ["edgefleet-agent"]
CMD ["--config", "/etc/edgefleet/agent.toml", "--listen", "0.0.0.0:8500", "--backends", "onnxruntime,litert"]
