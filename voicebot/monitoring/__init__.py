"""What voicebot tells its operators: Prometheus metrics, OpenTelemetry traces, the operator page."""
