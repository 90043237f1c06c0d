# One image for every Millrace process; the compose file picks the command.
FROM python:3.11-slim
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY infra ./infra
COPY examples ./examples
RUN pip install .
# Listen on all interfaces inside the container.
ENV MILLRACE_HOST=0.0.0.0
