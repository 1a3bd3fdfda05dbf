# coe's API and batch workers (docker-compose.yml's `api` and `worker`). The experts run elsewhere
# (the vLLM services), so this image holds no model weights and needs no GPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True

WORKDIR /app

# Dependencies change less often than the code around them, but setuptools needs the packages to
# build coe, so both come in before the install.
COPY pyproject.toml README.md ./
COPY coe ./coe
COPY routers ./routers
RUN pip install .

COPY config ./config
COPY graphs ./graphs

RUN useradd --create-home --uid 1000 coe \
    && mkdir -p /var/lib/coe \
    && chown coe /var/lib/coe
USER coe

EXPOSE 8000
CMD ["coe", "serve", "--config", "/app/config/coe.gpu.yaml", "--host", "0.0.0.0", "--port", "8000"]
