# voicebot's image for compose.yaml: the API and the offline voice pipeline (espeak-ng from Debian).
FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home voicebot
WORKDIR /app
COPY pyproject.toml README.md config.toml ./
COPY voicebot/ voicebot/
COPY static/ static/
RUN pip install --no-cache-dir .
USER voicebot
EXPOSE 8001
CMD ["python", "-m", "voicebot", "serve", "--host", "0.0.0.0", "--port", "8001"]
