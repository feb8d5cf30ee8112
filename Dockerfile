# tradectl container: multi-stage, runs as a non-root user.
# Build: docker build -t tradectl .   Run: docker run -v tradectl-data:/data -p 127.0.0.1:8787:8787 tradectl
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_SPEC="torch==2.13.0"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tradectl
# CPU-only torch first, pinned: an unpinned torch pulls a multi-GB CUDA build.
RUN /opt/tradectl/bin/pip install --index-url https://download.pytorch.org/whl/cpu "${TORCH_SPEC}"
COPY pyproject.toml README.md /src/
COPY brokers /src/brokers
COPY strategies /src/strategies
COPY risk /src/risk
COPY daemon /src/daemon
RUN /opt/tradectl/bin/pip install /src

FROM python:${PYTHON_VERSION}-slim
RUN useradd --system --create-home --home-dir /home/tradectl tradectl \
    && mkdir /data && chown tradectl:tradectl /data
COPY --from=build /opt/tradectl /opt/tradectl
COPY config /etc/tradectl
ENV PATH=/opt/tradectl/bin:$PATH \
    TRADECTL_STORE__PATH=/data/tradectl.db \
    TRADECTL_API__HOST=0.0.0.0
USER tradectl
WORKDIR /home/tradectl
EXPOSE 8787
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8787/healthz', timeout=3).status == 200 else 1)"
CMD ["tradectl", "run"]
