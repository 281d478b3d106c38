"""`voicebot serve` with bench/scripted_providers.py's cloud-style stand-ins, for bench/density.py.

Everything but the providers is voicebot's own: its settings (config.toml, then the environment), its app, its
serving and stopping. `--port` as for `voicebot serve`; the transcript is the one the density clients say.

    .venv/bin/python -m bench.scripted_voicebot --port 8001 --transcript "what are your opening hours"
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

from bench.scripted_providers import ScriptedPipelines
from voicebot.__main__ import run_app
from voicebot.app import create_app
from voicebot.config import load_settings
from voicebot.logs import configure_logging

CONFIG = Path(__file__).resolve().parent.parent / "config.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--transcript", required=True, help="what the STT hears in every utterance")
    args = parser.parse_args()
    settings = load_settings(CONFIG, os.environ)
    settings = replace(settings, server=replace(settings.server, port=args.port))
    configure_logging(settings.logging.level, settings.logging.format)
    app = create_app(settings, pipelines=ScriptedPipelines(args.transcript))
    return asyncio.run(run_app(app, settings))


if __name__ == "__main__":
    sys.exit(main())
