# Userkeep on an external PostgreSQL (DATABASE_URL; see docker-compose.yml and .env.example).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOST=0.0.0.0 PORT=8000
# The pinned dependencies first, so their layer is reused until requirements.lock changes
# (`make lock` regenerates it from pyproject.toml).
COPY requirements.lock /src/
RUN pip install --no-cache-dir -r /src/requirements.lock
# Then the package itself, without resolving anything again and without the [embedded] extra
# (the image always has DATABASE_URL). The source is removed: the app runs from site-packages,
# migrations included, as it would from any installed wheel.
COPY pyproject.toml README.md /src/
COPY app /src/app
RUN pip install --no-cache-dir --no-deps /src && rm -rf /src \
    && useradd --system --no-create-home userkeep
USER userkeep
WORKDIR /tmp
EXPOSE 8000
# Ready = the database answers and the schema is at head (GET /v1/ready); 503 otherwise.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["python", "-c", \
  "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/v1/ready' % os.environ.get('PORT', '8000'), timeout=2)"]
CMD ["python", "-m", "app", "serve"]
