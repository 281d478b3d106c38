"""voicebot: a self-hosted voice-agent platform on LiveKit."""

__version__ = "0.1.0"
