FROM python:3.11-slim
WORKDIR /srv
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000
COPY pyproject.toml README.md ./
COPY app ./app
COPY migrations ./migrations
RUN pip install --no-cache-dir . && useradd --system --no-create-home userkeep
USER userkeep
EXPOSE 8000
# DATABASE_URL must point at PostgreSQL (see docker-compose.yml); the embedded server is for
# development without Docker.
CMD ["python", "-m", "app", "serve"]
