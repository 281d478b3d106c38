"""SIP: trunks and dispatch rules provisioned from config.toml, and the phone calls LiveKit tells us about."""
