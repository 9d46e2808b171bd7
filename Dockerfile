FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bookgen_events ./bookgen_events
COPY consumers ./consumers
COPY gateway ./gateway
RUN pip install --no-cache-dir . && useradd --system --no-create-home bookgen
USER bookgen
EXPOSE 8000
CMD ["bookgen-events", "gateway", "--host", "0.0.0.0", "--port", "8000"]
