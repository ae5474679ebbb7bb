# The bse-predict image: the `bse-predict` command and its streaming workers.
# Used by docker-compose.yml for the `worker` and `alerts` services.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY pyproject.toml README.md ./
COPY bse_predict ./bse_predict
COPY configs ./configs
RUN pip install . && useradd --create-home --uid 10001 bse

# Faust keeps its table data under the working directory: make it the user's own.
USER bse
WORKDIR /home/bse
ENTRYPOINT ["bse-predict"]
CMD ["--help"]
