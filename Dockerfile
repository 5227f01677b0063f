# tssynth service image: CPU-only torch, non-root, models on a volume.
#
# Two stages: the build stage has pip's caches and build tooling, the runtime stage only the finished
# virtual environment, which keeps the image smaller and free of build leftovers.

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index: from PyPI the same pin would pull the multi-GB CUDA build. The
# project's own install below then finds torch==2.13.0 already satisfied.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
WORKDIR /src
COPY pyproject.toml README.md ./
COPY model_core ./model_core
COPY app ./app
RUN pip install .

FROM python:3.11-slim
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    TSSYNTH_MODEL_DIR=/data/models \
    TSSYNTH_DATASETS_DIR=/data/datasets
RUN useradd --create-home --uid 10001 tssynth \
    && mkdir -p /data/models /data/datasets \
    && chown -R tssynth:tssynth /data
COPY --from=build /opt/venv /opt/venv
USER tssynth
WORKDIR /home/tssynth
# Bundles, versions and the job database (jobs.sqlite) live here and must outlive the container.
VOLUME ["/data/models"]
EXPOSE 8000
# No curl in slim images: the interpreter that is there anyway does the probe. The start period
# covers the demo model's first training only loosely; /healthz answers during it regardless.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
ENTRYPOINT ["tssynth", "serve", "--host", "0.0.0.0", "--port", "8000"]
