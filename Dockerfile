# The StocKing image: one image for every process (api, relayer, simulator, migrations, fills);
# the command chooses which. docker-compose.yml shows the single-host layout; docs/OPERATIONS.md
# explains it. No secret is baked in: configuration comes from the environment at run time.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# An unprivileged user to run as; /data is where a SQLite database may live (development).
RUN groupadd --system --gid 10001 stocking \
 && useradd --system --uid 10001 --gid stocking --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin stocking \
 && mkdir -p /app /data \
 && chown stocking:stocking /data

WORKDIR /app

# Dependencies first (their layer is reused while only the code changes), exactly as locked:
# every package pinned and checked against its hash.
COPY requirements.lock ./
RUN python -m pip install --require-hashes --no-deps -r requirements.lock

COPY relayer ./relayer
COPY api ./api
COPY migrations ./migrations
COPY gunicorn.conf.py ./

USER stocking

# Development default only; compose and production set DATABASE_URL (production refuses SQLite).
# API_HOST: Gunicorn listens on every interface of the container (its own network namespace),
# or a published port would reach nothing; outside, what is published is the host's choice.
ENV DATABASE_URL=sqlite:////data/stocking.db \
    API_HOST=0.0.0.0 \
    PORT=8000
EXPOSE 8000

CMD ["gunicorn", "-c", "gunicorn.conf.py", "api.main:app"]
