# deltahub API server (and, later, workers). CPU torch by default; for GPU workers build
# FROM an NVIDIA CUDA image and install the matching torch build instead.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app

RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.1"

COPY pyproject.toml README.md alembic.ini ./
COPY registry ./registry
COPY compress ./compress
COPY kernels ./kernels
COPY migrations ./migrations
# Editable, so `deltahub db upgrade` finds ./migrations beside the packages.
RUN pip install -e .

EXPOSE 8000
CMD ["deltahub", "serve", "--host", "0.0.0.0", "--port", "8000"]
