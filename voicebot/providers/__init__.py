"""Offline STT, TTS and LLM whose models ship inside installed packages."""
