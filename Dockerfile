# deltahub API server and workers (`deltahub serve`, `deltahub worker`). CPU torch by
# default; a GPU worker builds with --build-arg TORCH_INDEX=<a CUDA wheel index>
# (docker-compose.yml's worker-gpu does).
FROM python:3.11-slim

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
WORKDIR /app

RUN pip install --index-url "$TORCH_INDEX" "torch>=2.1"

COPY pyproject.toml README.md alembic.ini ./
COPY registry ./registry
COPY compress ./compress
COPY kernels ./kernels
COPY migrations ./migrations
# Editable, so `deltahub db upgrade` finds ./migrations beside the packages; the server
# extra (a plain `deltahub` is the client alone), which brings the codecs too.
RUN pip install -e ".[server]"

EXPOSE 8000
CMD ["deltahub", "serve", "--host", "0.0.0.0", "--port", "8000"]
