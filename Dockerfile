# One image for every Millrace process; the compose file picks the command.
# The base is a build argument: the official python:3.11-slim by default; `make images` passes
# its Debian-built stand-in on a machine that cannot reach a registry.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}
WORKDIR /app
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
COPY cli ./cli
COPY infra ./infra
COPY examples ./examples
# The compiled parts (the learners' encoding, the trainer's join), built on the host by
# `make images` (deploy/docker/images.sh).
COPY dist/wheels ./wheels
RUN pip install ./wheels/*.whl . && rm -rf ./wheels
# Listen on all interfaces inside the container.
ENV MILLRACE_HOST=0.0.0.0
