"""The programs voicebot runs beside itself on 127.0.0.1: livekit-server, livekit-sip, redis-server."""
