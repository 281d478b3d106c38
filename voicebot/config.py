"""Typed settings: read config.toml once, then let the environment override it."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from voicebot.redis_address import InvalidRedisUrl, RedisAddress

IDENTIFIER_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
# "voicebot_" + agent id + "_" + 8 hex characters must still be a valid room name (64 at most).
MAX_AGENT_ID_LENGTH = 64 - len("voicebot_") - 1 - 8
# livekit-server only logs an error for shorter secrets (outside --dev); voicebot refuses them outright.
MIN_SECRET_LENGTH = 32

# The three variables LiveKit's own tools read; they win over config.toml.
LIVEKIT_ENV = {"url": "LIVEKIT_URL", "api_key": "LIVEKIT_API_KEY", "api_secret": "LIVEKIT_API_SECRET"}
ENV_PREFIX = "VOICEBOT_"
# Measured on a 2-core machine: a session costs about 13% of a core, and one loop runs into trouble past 6-8
# sessions; 6 a core leaves headroom for a session's start and a burst of speech. See "Capacity" in README.
SESSIONS_PER_CORE = 6
# Where `make models` puts the offline models, relative to the checkout (and config.toml).
DEFAULT_MODELS_DIR = ".cache/models"


def default_max_concurrent(cores: int | None = None) -> int:
    """`sessions.max_concurrent` when config.toml leaves it out: SESSIONS_PER_CORE for each core."""
    return SESSIONS_PER_CORE * max(1, cores if cores is not None else os.cpu_count() or 1)


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and what is wrong."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


@dataclass(frozen=True)
class ServerSettings:
    """Where the HTTP API listens and how much it accepts."""

    host: str = "127.0.0.1"
    port: int = 8001
    max_body_bytes: int = 16 * 1024
    """Request bodies above this size get 413; the API's bodies are a few hundred bytes."""
    public_url: str = ""
    """The address people reach voicebot at behind a proxy (https://bot.example.com): its host is an
    allowed Host, and its origin counts as voicebot's own."""
    allowed_hosts: tuple[str, ...] = ()
    """Host names (no port) requests may name besides the bind host, localhost, 127.0.0.1 and public_url's."""
    allowed_origins: tuple[str, ...] = ()
    """Origins (scheme://host[:port]) of other sites whose pages may call the API."""
    trusted_proxies: tuple[str, ...] = ()
    """IPs or CIDRs of proxies whose X-Forwarded-For names the client (for the create-room rate limit)."""


@dataclass(frozen=True)
class LiveKitSettings:
    """How to reach the LiveKit server, or how to run the embedded one when `url` is empty."""

    url: str = ""
    """ws:// or wss:// URL of an external LiveKit server; empty starts an embedded livekit-server."""
    api_key: str = "voicebot"
    api_secret: str = ""
    public_url: str = ""
    """URL handed to clients when it differs from `url` (a proxy, a public hostname)."""
    server_bin: str = ""
    """Path of the livekit-server binary for the embedded server; empty searches PATH and .cache/bin."""
    port: int = 7880
    tcp_port: int = 7881
    udp_port: int = 7882
    empty_timeout_s: int = 300
    """Seconds a room created by voicebot waits for its first participant before LiveKit closes it."""
    departure_timeout_s: int = 20
    """Seconds a room stays open after its last participant leaves."""
    token_ttl_s: int = 3600
    request_timeout_s: float = 5.0
    startup_timeout_s: float = 20.0

    @property
    def embedded(self) -> bool:
        """True when voicebot runs its own livekit-server."""
        return not self.url


@dataclass(frozen=True)
class RedisSettings:
    """Shared state for several voicebot processes; empty keeps state in memory."""

    url: str = ""
    lease_ttl_s: float = 2.0
    """A room's agent belongs to one process for this long, renewed while it lives; after a crash,
    another process takes the room over once it lapses."""
    heartbeat_s: float = 0.5
    """How often a process renews its heartbeat and leases, and looks for rooms to take over."""

    @cached_property
    def address(self) -> RedisAddress | None:
        """`url` parsed once (host, port, login, TLS, db); None when empty or a unix:// socket."""
        if not self.url.startswith(("redis://", "rediss://")):
            return None
        return RedisAddress.parse(self.url)


@dataclass(frozen=True)
class AuthSettings:
    """Who may use the API: bearer keys, and what an anonymous caller may still do."""

    api_keys: tuple[str, ...] = ()
    """Keys accepted in `Authorization: Bearer <key>`; empty serves loopback only, with no key asked."""
    public_create_room: bool = False
    """Let anonymous callers create rooms (and list agents), for a site that embeds the page."""
    create_room_per_minute: int = 6
    """Anonymous create-room requests one client IP may make per minute, with public_create_room."""


@dataclass(frozen=True)
class LoggingSettings:
    """Log level and rendering: console in a terminal, JSON otherwise, unless forced."""

    level: str = "info"
    format: str = "auto"


@dataclass(frozen=True)
class SessionSettings:
    """Limits of the in-process agent runtime."""

    max_concurrent: int = field(default_factory=default_max_concurrent)
    """Agent sessions `serve` runs at once (6 per core unless set); over it, new rooms are refused with 503.
    With `serve --workers N` it is shared out among the workers."""
    drain_timeout_s: float = 10.0
    """On shutdown, how long sessions get to close before they are cancelled."""
    transcript_retention_s: int = 3600
    """How long an ended session's transcript stays readable."""
    retry_after_s: int = 5
    """The Retry-After a refused request is given."""
    max_provider_errors: int = 3
    """Failed STT, LLM or TTS requests in a row a session tolerates before it ends (livekit-agents: 3)."""
    max_duration_s: float = 1800.0
    """Every session ends after this long (end reason `max_duration`), whoever is still talking."""
    unjoined_timeout_s: float = 30.0
    """A room made by create-room that nobody joins within this long closes (end reason `nobody_joined`)
    and frees its place; LiveKit's empty_timeout_s is far longer, and agents do not count as people."""
    max_transcript_lines: int = 500
    """Lines a session's transcript keeps; past it the oldest are dropped (both stores)."""
    admission_max_loop_lag_ms: float = 50.0
    """A new session is refused (503 at_capacity) while the event loop's lag, at its 90th percentile over
    `admission_window_s`, is above this; 0 turns the check off."""
    admission_max_cpu: float = 0.85
    """A new session is refused while the loop's thread used more than this share of a core over
    `admission_window_s` (1.0 is all the GIL lets it have); 0 turns the check off."""
    admission_max_machine_cpu: float = 0.9
    """A new session is refused while the machine's cores were busier than this share over
    `admission_window_s`, whoever kept them busy (other sessions' models, livekit-server, anything else on
    the machine): past it every call's audio work runs late together. 0 turns the check off."""
    admission_max_model_wait_ms: float = 200.0
    """A new session is refused while the offline models' jobs (Moonshine, Piper, the sentence encoder)
    waited longer than this for a thread, at their 90th percentile over `admission_window_s`: the replies
    of every running call are that late already. 0 turns the check off."""
    admission_window_s: float = 10.0
    """How far back the admission measurements look."""


@dataclass(frozen=True)
class TelemetrySettings:
    """OpenTelemetry traces: off unless an OTLP endpoint is set, normally by the standard OTEL_* variables."""

    traces_endpoint: str = ""
    """The OTLP/HTTP URL spans are posted to (http://127.0.0.1:4318/v1/traces); empty: no traces, no cost."""
    service_name: str = "voicebot"
    """The resource's service.name (OTEL_SERVICE_NAME)."""
    include_personal_data: bool = False
    """Let transcripts, phone numbers and participant identities into spans; off, livekit-agents' personal
    attributes (lk.pii.*, gen_ai messages) are stripped before anything is exported."""

    @property
    def enabled(self) -> bool:
        """True when traces are exported."""
        return bool(self.traces_endpoint)


@dataclass(frozen=True)
class MetricsSettings:
    """Prometheus metrics: GET /metrics on the API port (behind the API key), and on a loopback port."""

    enabled: bool = True
    """False serves no /metrics and records nothing: no HTTP middleware, no session observer."""
    port: int = 0
    """A port on 127.0.0.1 serving /metrics without a key, for a Prometheus on this host; 0 serves none."""


@dataclass(frozen=True)
class ModelSettings:
    """The offline pipeline: which recogniser and voice run without cloud keys, and where their models are."""

    stt: str = "moonshine"
    """What an agent's stt.provider "offline", or "auto" without DEEPGRAM_API_KEY, listens with."""
    tts: str = "piper"
    """What an agent's tts.provider "offline", or "auto" without ELEVEN_API_KEY, speaks with."""
    dir: str = DEFAULT_MODELS_DIR
    """Directory holding moonshine-base/, moonshine-tiny/ and the like. Relative to config.toml's directory
    when it comes from the file; from VOICEBOT_MODELS_DIR or settings not read from a file, relative to the
    working directory."""

    @property
    def path(self) -> Path:
        """`dir` as a path."""
        return Path(self.dir)


@dataclass(frozen=True)
class ProviderKeys:
    """Cloud provider keys, read only from the environment and never logged."""

    deepgram_api_key: str = ""
    eleven_api_key: str = ""
    openai_api_key: str = ""


@dataclass(frozen=True)
class Rule:
    """One rule of the offline rules engine: what the caller says, and what the agent answers."""

    reply: str
    phrases: tuple[str, ...] = ()
    """Word sequences that trigger the rule when the caller says them (case and punctuation ignored)."""
    patterns: tuple[str, ...] = ()
    """Regular expressions (case-insensitive) searched in what the caller said."""
    end_call: bool = False
    """After speaking the reply, the agent ends the call."""
    digits: tuple[str, ...] = ()
    """Phone keys (DTMF: 0-9, *, #) that trigger the rule when a caller presses them."""
    examples: tuple[str, ...] = ()
    """More ways of saying the phrases, matched by meaning only (never as exact words, and the offline
    recogniser does not listen for them)."""


@dataclass(frozen=True)
class RulesMatching:
    """When the rules engine answers a sentence that says a rule's phrases in other words.

    A classifier trained on the rules' phrases and examples, and on everyday sentences no rule answers
    (providers/off_topic.txt), says how likely each rule, or none of them, is. Defaults were chosen on
    tests/data/rules_phrases.toml (`python -m bench.rules_matching --sweep`)."""

    by_meaning: bool = True
    """False answers exact phrases and patterns only, as before matching by meaning existed."""
    min_probability: float = 0.58
    """The likeliest rule answers only at this probability or above; below it, or when "none" is likeliest,
    the fallback does."""
    min_margin: float = 0.2
    """...and only when it is this much likelier than the next class."""
    end_call_min_probability: float = 0.62
    """The bar for a rule with end_call: hanging up on a misheard sentence costs more than a fallback."""


@dataclass(frozen=True)
class ProviderChoice:
    """Which STT, LLM or TTS an agent uses: `auto` picks the cloud one when its key is set."""

    provider: str = "auto"
    model: str = ""
    """The provider's model: Deepgram's (nova-3 when empty), ElevenLabs', the OpenAI-compatible LLM's; for
    Moonshine its size, base (when empty) or tiny."""
    voice: str = ""
    """TTS voice: an espeak-ng voice for the offline TTS, a voice id for ElevenLabs (Piper has one voice)."""
    base_url: str = ""
    """OpenAI-compatible LLM endpoint (Ollama, vLLM)."""
    speed_wpm: int = 175
    """Speaking rate of the offline TTS (espeak-ng or Piper), in words per minute."""
    keywords: tuple[str, ...] = ()
    """STT: words callers say to this agent that a recogniser may not know (names, products, places).
    Deepgram gets them as key terms (nova-3 models); Moonshine favours them, with the words of the agent's
    rules, as `keyword_boost` says."""
    keyword_boost: float = 2.0
    """STT, Moonshine: how much likelier, in log-probability, a word of the agent's rules or `keywords` is
    made while decoding; 0 listens without favouring any word. Chosen on tests/data/rules_phrases.toml spoken
    (`python -m bench.offline_quality`): higher puts unrelated sentences on a rule's words."""
    beam_width: int = 3
    """STT, Moonshine: how many readings of an utterance the decoder follows at once (beam search); 1 takes
    the likeliest token at each step (greedy). Wider hears more right and costs more CPU a turn."""


@dataclass(frozen=True)
class TurnSettings:
    """Voice activity detection and turn-taking."""

    vad_activation_threshold: float = 0.5
    vad_min_silence_s: float = 0.35
    """Silence after speech before VAD calls the utterance finished."""
    min_endpointing_delay_s: float = 0.2
    max_endpointing_delay_s: float = 3.0
    allow_interruptions: bool = True


@dataclass(frozen=True)
class AgentDefinition:
    """One voice agent a client can talk to."""

    id: str
    name: str
    description: str = ""
    instructions: str = ""
    greeting: str = ""
    language: str = "en-US"
    fallback: str = "Sorry, I did not catch that. Could you say it another way?"
    """The rules engine's reply when no rule matches."""
    stt: ProviderChoice = field(default_factory=ProviderChoice)
    llm: ProviderChoice = field(default_factory=lambda: ProviderChoice(provider="rules"))
    tts: ProviderChoice = field(default_factory=ProviderChoice)
    turn: TurnSettings = field(default_factory=TurnSettings)
    rules: tuple[Rule, ...] = ()
    rules_matching: RulesMatching = field(default_factory=RulesMatching)
    text_input: bool = False
    """Whether text a participant sends on the lk.chat topic reaches the agent's LLM as a turn."""


@dataclass(frozen=True)
class InboundRoute:
    """Phone calls that reach one agent: to these numbers, from these addresses, or with this login."""

    name: str
    agent_id: str
    numbers: tuple[str, ...] = ()
    """Called numbers (as the SIP INVITE names them) this route answers."""
    allowed_addresses: tuple[str, ...] = ()
    """Source IP addresses or CIDR ranges calls may come from."""
    auth_username: str = ""
    auth_password: str = ""


@dataclass(frozen=True)
class OutboundTrunk:
    """A SIP provider or PBX that voicebot places calls through."""

    name: str
    address: str
    """host or host:port of the provider's SIP server."""
    numbers: tuple[str, ...] = ()
    """Caller-id numbers calls are placed from."""
    transport: str = "auto"
    auth_username: str = ""
    auth_password: str = ""
    allowed_prefixes: tuple[str, ...] = ()
    """E.164 prefixes ("+1555", "+44") calls through this trunk may go to; empty refuses every call."""


@dataclass(frozen=True)
class SipSettings:
    """Phone calls through LiveKit SIP: the embedded livekit-sip and the trunks voicebot provisions."""

    enabled: bool = False
    """Provision trunks and dispatch rules; with the embedded LiveKit, also run livekit-sip and Redis."""
    server_bin: str = ""
    """Path of the livekit-sip binary; empty searches PATH and .cache/bin."""
    port: int = 5060
    """SIP signalling port of the embedded livekit-sip (UDP and TCP)."""
    rtp_port_start: int = 10000
    rtp_port_end: int = 10100
    health_port: int = 8082
    health_url: str = ""
    """Where livekit-sip's health check answers; empty means the embedded one on health_port."""
    redis_port: int = 6379
    """Port of the embedded redis-server LiveKit and livekit-sip share, when redis.url is empty."""
    ringing_timeout_s: int = 30
    """How long an outbound call rings before it counts as not answered."""
    max_outbound_concurrent: int = 2
    """Outbound calls in progress at once (from dial to hang-up), across every process sharing state."""
    outbound_per_hour: int = 20
    """Outbound calls each API key may place in any hour."""
    inbound: tuple[InboundRoute, ...] = ()
    outbound: tuple[OutboundTrunk, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything voicebot is configured with, validated."""

    server: ServerSettings = field(default_factory=ServerSettings)
    livekit: LiveKitSettings = field(default_factory=LiveKitSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    logging: LoggingSettings = field(default_factory=LoggingSettings)
    sessions: SessionSettings = field(default_factory=SessionSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    providers: ProviderKeys = field(default_factory=ProviderKeys)
    sip: SipSettings = field(default_factory=SipSettings)
    telemetry: TelemetrySettings = field(default_factory=TelemetrySettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    agents: tuple[AgentDefinition, ...] = ()
    source: str = "<defaults>"

    def agent(self, agent_id: str) -> AgentDefinition | None:
        """The agent with this id, if one is defined."""
        return next((agent for agent in self.agents if agent.id == agent_id), None)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "livekit": LiveKitSettings,
    "auth": AuthSettings,
    "redis": RedisSettings,
    "logging": LoggingSettings,
    "sessions": SessionSettings,
    "telemetry": TelemetrySettings,
    "metrics": MetricsSettings,
    "models": ModelSettings,
}
# Provider keys come from the variables their own SDKs read, never from the file.
PROVIDER_ENV = {
    "deepgram_api_key": "DEEPGRAM_API_KEY",
    "eleven_api_key": "ELEVEN_API_KEY",
    "openai_api_key": "OPENAI_API_KEY",
}
# Past this a favoured word wins over anything the model heard: a recogniser that only says the rules' words.
MAX_KEYWORD_BOOST = 10.0
# Widths up to 4 were measured (bench/offline_quality.py); 8 bounds the decoder's batch well past them.
MAX_BEAM_WIDTH = 8
# What [models] stt and tts may name: the offline recognisers and voices.
OFFLINE_STT = ("moonshine", "pocketsphinx")
# Moonshine's sizes, as an agent's stt.model names them ("" is base).
MOONSHINE_MODELS = ("base", "tiny")
OFFLINE_TTS = ("piper", "espeak")
STT_PROVIDERS = ("auto", "offline", *OFFLINE_STT, "deepgram")
TTS_PROVIDERS = ("auto", "offline", *OFFLINE_TTS, "elevenlabs")
LLM_PROVIDERS = ("rules", "openai")
DTMF_DIGITS = frozenset("0123456789*#")
# A destination prefix: "+" and the leading digits of E.164 numbers (at most 15 digits).
E164_PREFIX_PATTERN = re.compile(r"\+[0-9]{1,15}")
SIP_TRANSPORTS = ("auto", "udp", "tcp", "tls")
# The OpenTelemetry SDK's standard variables, as its specification defines them; they win over [telemetry].
OTEL_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_TRACES_ENDPOINT = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_SERVICE_NAME = "OTEL_SERVICE_NAME"
OTEL_SDK_DISABLED = "OTEL_SDK_DISABLED"


def load_settings(path: Path, environ: Mapping[str, str]) -> Settings:
    """Read `path`, apply environment overrides and validate; raises ConfigError."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), f"not valid TOML ({exc})") from None
    return parse_settings(raw, environ, source=str(path), config_dir=path.parent)


def parse_settings(
    raw: Mapping[str, Any],
    environ: Mapping[str, str],
    source: str = "<memory>",
    config_dir: Path | None = None,
) -> Settings:
    """Build validated settings from a parsed TOML document and the environment.

    `config_dir` is where the document was read from: relative paths in it are resolved against it
    (against the working directory when it is None).
    """
    unknown = set(raw) - set(_SECTIONS) - {"agents", "sip"}
    if unknown:
        raise ConfigError(
            sorted(unknown)[0], f"unknown section; expected one of {_known(_SECTIONS)}, agents, sip"
        )
    sections = {name: _section(name, cls, raw.get(name, {}), environ) for name, cls in _SECTIONS.items()}
    sections["telemetry"] = _otel_environment(sections["telemetry"], environ)
    sections["models"] = _models_dir(sections["models"], environ, config_dir)
    settings = Settings(
        **sections,
        providers=ProviderKeys(**{key: environ.get(env, "") for key, env in PROVIDER_ENV.items()}),
        sip=_sip(raw.get("sip", {}), environ),
        agents=_agents(raw.get("agents", [])),
        source=source,
    )
    _validate(settings)
    return settings


def _section(name: str, cls: type[Any], table: Any, environ: Mapping[str, str]) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(name, "must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise ConfigError(f"{name}.{key}", f"unknown key; expected one of {_known(fields)}")
    values: dict[str, Any] = {}
    for key in fields:
        full_key = f"{name}.{key}"
        env_name = LIVEKIT_ENV.get(key) if name == "livekit" else None
        env_name = env_name or f"{ENV_PREFIX}{name}_{key}".upper()
        if env_name in environ:
            values[key] = _from_env(env_name, environ[env_name], hints[key])
        elif key in table:
            values[key] = _value(full_key, table[key], hints[key])
    return cls(**values)


def _otel_environment(telemetry: TelemetrySettings, environ: Mapping[str, str]) -> TelemetrySettings:
    """The standard OTEL_* variables over [telemetry]: the traces endpoint is used as given, the general
    endpoint gets the signal's path appended (the OTLP exporter specification's rule for OTLP/HTTP)."""
    if environ.get(OTEL_SDK_DISABLED, "").strip().lower() == "true":
        return dataclasses.replace(telemetry, traces_endpoint="")
    endpoint = telemetry.traces_endpoint
    if environ.get(OTEL_TRACES_ENDPOINT):
        endpoint = environ[OTEL_TRACES_ENDPOINT].strip()
    elif environ.get(OTEL_ENDPOINT):
        endpoint = environ[OTEL_ENDPOINT].strip().rstrip("/") + "/v1/traces"
    service_name = environ.get(OTEL_SERVICE_NAME, "").strip() or telemetry.service_name
    return dataclasses.replace(telemetry, traces_endpoint=endpoint, service_name=service_name)


def _models_dir(models: ModelSettings, environ: Mapping[str, str], config_dir: Path | None) -> ModelSettings:
    """`dir` made absolute once, so nothing depends on the working directory of whoever reads it later."""
    if not models.dir.strip():
        raise ConfigError("models.dir", "must name a directory, e.g. .cache/models")
    from_env = f"{ENV_PREFIX}MODELS_DIR" in environ
    # A path in config.toml means the same wherever voicebot is started from; one typed in a shell, the
    # directory it was typed in.
    base = Path.cwd() if from_env or config_dir is None else config_dir.resolve()
    return dataclasses.replace(models, dir=str(base / Path(models.dir).expanduser()))


def _sip(table: Any, environ: Mapping[str, str]) -> SipSettings:
    """[sip]: plain keys may come from the environment like other sections; the routes only from the file."""
    if not isinstance(table, dict):
        raise ConfigError("sip", "must be a table")
    plain = {key: value for key, value in table.items() if key not in ("inbound", "outbound")}
    base: SipSettings = _section("sip", SipSettings, plain, environ)
    routes = _value("sip.inbound", table.get("inbound", []), tuple[InboundRoute, ...])
    trunks = _value("sip.outbound", table.get("outbound", []), tuple[OutboundTrunk, ...])
    return dataclasses.replace(
        base,
        inbound=_passwords_from_env("sip.inbound", routes, environ),
        outbound=_passwords_from_env("sip.outbound", trunks, environ),
    )


def sip_password_variable(name: str) -> str:
    """The variable holding a route's or trunk's password: office-pbx -> VOICEBOT_SIP_OFFICE_PBX_PASSWORD."""
    return f"{ENV_PREFIX}SIP_{re.sub(r'[^A-Za-z0-9]', '_', name).upper()}_PASSWORD"


Trunk = typing.TypeVar("Trunk", InboundRoute, OutboundTrunk)


def _passwords_from_env(key: str, items: tuple[Trunk, ...], environ: Mapping[str, str]) -> tuple[Trunk, ...]:
    """Passwords from VOICEBOT_SIP_<NAME>_PASSWORD win over config.toml, so the file need hold none."""
    seen: dict[str, str] = {}
    result = []
    for index, item in enumerate(items):
        variable = sip_password_variable(item.name)
        if variable in seen:
            # office-pbx and office_pbx would read one variable: say so rather than share a password.
            raise ConfigError(
                f"{key}[{index}].name", f"{item.name!r} and {seen[variable]!r} both read {variable}"
            )
        seen[variable] = item.name
        password = environ.get(variable)
        result.append(dataclasses.replace(item, auth_password=password) if password else item)
    return tuple(result)


def _agents(entries: Any) -> tuple[AgentDefinition, ...]:
    if not isinstance(entries, list):
        raise ConfigError("agents", "must be an array of tables ([[agents]])")
    agents: list[AgentDefinition] = []
    for index, entry in enumerate(entries):
        where = f"agents[{index}]"
        agent = _build(AgentDefinition, entry, where)
        if not IDENTIFIER_PATTERN.fullmatch(agent.id) or len(agent.id) > MAX_AGENT_ID_LENGTH:
            raise ConfigError(
                f"{where}.id",
                f"{agent.id!r} must be 1 to {MAX_AGENT_ID_LENGTH} letters, digits, '_' or '-'",
            )
        if any(other.id == agent.id for other in agents):
            raise ConfigError(f"{where}.id", f"{agent.id!r} is defined twice")
        _validate_agent(agent, where)
        agents.append(agent)
    return tuple(agents)


def _validate_agent(agent: AgentDefinition, where: str) -> None:
    for kind, choices in (("stt", STT_PROVIDERS), ("tts", TTS_PROVIDERS), ("llm", LLM_PROVIDERS)):
        provider = getattr(agent, kind).provider
        if provider not in choices:
            raise ConfigError(f"{where}.{kind}.provider", f"{provider!r} is not one of {', '.join(choices)}")
    if agent.llm.provider == "openai" and not agent.llm.base_url:
        raise ConfigError(f"{where}.llm.base_url", "is required for an OpenAI-compatible LLM")
    for index, rule in enumerate(agent.rules):
        if not rule.phrases and not rule.patterns and not rule.digits:
            raise ConfigError(f"{where}.rules[{index}]", "needs phrases, patterns or digits")
        for digit in rule.digits:
            if digit not in DTMF_DIGITS:
                raise ConfigError(
                    f"{where}.rules[{index}].digits", f"{digit!r} is not a phone key (0-9, *, #)"
                )
        for pattern in rule.patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ConfigError(f"{where}.rules[{index}].patterns", f"{pattern!r}: {exc}") from None
    matching = agent.rules_matching
    for key in ("min_probability", "min_margin", "end_call_min_probability"):
        if not 0 <= getattr(matching, key) <= 1:
            raise ConfigError(f"{where}.rules_matching.{key}", "must be between 0 and 1")
    if agent.stt.provider == "moonshine" and agent.stt.model not in ("", *MOONSHINE_MODELS):
        raise ConfigError(f"{where}.stt.model", f"Moonshine comes as {' or '.join(MOONSHINE_MODELS)}")
    if not 0 <= agent.stt.keyword_boost <= MAX_KEYWORD_BOOST:
        raise ConfigError(f"{where}.stt.keyword_boost", f"must be between 0 and {MAX_KEYWORD_BOOST:g}")
    if not 1 <= agent.stt.beam_width <= MAX_BEAM_WIDTH:
        raise ConfigError(f"{where}.stt.beam_width", f"must be between 1 and {MAX_BEAM_WIDTH}")
    turn = agent.turn
    if not 0 < turn.vad_activation_threshold < 1:
        raise ConfigError(f"{where}.turn.vad_activation_threshold", "must be between 0 and 1")
    if turn.min_endpointing_delay_s > turn.max_endpointing_delay_s:
        raise ConfigError(f"{where}.turn.min_endpointing_delay_s", "must not exceed max_endpointing_delay_s")


def _build(cls: type[Any], table: Any, where: str) -> Any:
    """A dataclass from a TOML table: every key known, every value of its field's type."""
    if not isinstance(table, dict):
        raise ConfigError(where, "must be a table")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            raise ConfigError(f"{where}.{key}", f"unknown key; expected one of {_known(fields)}")
    for name, f in fields.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and name not in table:
            raise ConfigError(f"{where}.{name}", "is required")
    return cls(**{key: _value(f"{where}.{key}", value, hints[key]) for key, value in table.items()})


def _value(key: str, value: Any, hint: Any) -> Any:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if typing.get_origin(hint) is tuple:
        item_hint = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(key, f"must be a list, got {value!r}")
        return tuple(_value(f"{key}[{index}]", item, item_hint) for index, item in enumerate(value))
    return _typed(key, value, hint)


def _validate(settings: Settings) -> None:
    for key in ("port", "tcp_port", "udp_port"):
        _check_port(f"livekit.{key}", getattr(settings.livekit, key))
    _check_port("server.port", settings.server.port)
    if settings.metrics.enabled and settings.metrics.port:
        _check_port("metrics.port", settings.metrics.port)
        if settings.metrics.port == settings.server.port:
            raise ConfigError("metrics.port", "must differ from server.port (0 serves no metrics port)")
    lk = settings.livekit
    if lk.url and not lk.url.startswith(("ws://", "wss://", "http://", "https://")):
        raise ConfigError("livekit.url", f"{lk.url!r} must start with ws://, wss://, http:// or https://")
    if not lk.api_key:
        raise ConfigError("livekit.api_key", "must not be empty")
    if len(lk.api_secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            "livekit.api_secret",
            f"must be at least {MIN_SECRET_LENGTH} characters, LiveKit's minimum for a safe key",
        )
    for key in ("empty_timeout_s", "departure_timeout_s", "token_ttl_s"):
        if getattr(lk, key) < 1:
            raise ConfigError(f"livekit.{key}", "must be at least 1")
    for key in ("request_timeout_s", "startup_timeout_s"):
        if getattr(lk, key) <= 0:
            raise ConfigError(f"livekit.{key}", "must be greater than 0")
    for key, choices in (("stt", OFFLINE_STT), ("tts", OFFLINE_TTS)):
        if getattr(settings.models, key) not in choices:
            raise ConfigError(
                f"models.{key}", f"{getattr(settings.models, key)!r} is not one of {', '.join(choices)}"
            )
    sessions = settings.sessions
    for key in ("max_duration_s", "unjoined_timeout_s"):
        if getattr(sessions, key) <= 0:
            raise ConfigError(f"sessions.{key}", "must be greater than 0")
    if settings.sessions.max_transcript_lines < 1:
        raise ConfigError("sessions.max_transcript_lines", "must be at least 1")
    if sessions.max_concurrent < 1:
        raise ConfigError("sessions.max_concurrent", "must be at least 1")
    if sessions.admission_max_loop_lag_ms < 0:
        raise ConfigError("sessions.admission_max_loop_lag_ms", "must be 0 (off) or more")
    if not 0 <= sessions.admission_max_cpu <= 1:
        raise ConfigError("sessions.admission_max_cpu", "must be from 0 (off) to 1 (one whole core)")
    if not 0 <= sessions.admission_max_machine_cpu <= 1:
        raise ConfigError("sessions.admission_max_machine_cpu", "must be from 0 (off) to 1 (every core)")
    if sessions.admission_max_model_wait_ms < 0:
        raise ConfigError("sessions.admission_max_model_wait_ms", "must be 0 (off) or more")
    if sessions.admission_window_s <= 0:
        raise ConfigError("sessions.admission_window_s", "must be greater than 0")
    if settings.server.max_body_bytes < 256:
        raise ConfigError("server.max_body_bytes", "must be at least 256")
    if settings.logging.level.lower() not in {"debug", "info", "warning", "error"}:
        raise ConfigError("logging.level", "must be one of debug, info, warning, error")
    if settings.logging.format not in {"auto", "console", "json"}:
        raise ConfigError("logging.format", "must be one of auto, console, json")
    if settings.redis.url and not settings.redis.url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError("redis.url", "must start with redis://, rediss:// or unix://")
    try:
        redis_address = settings.redis.address
    except InvalidRedisUrl as exc:
        raise ConfigError("redis.url", str(exc)) from None
    if settings.sip.enabled and settings.livekit.embedded and settings.redis.url and redis_address is None:
        raise ConfigError("redis.url", "livekit-server and livekit-sip need a redis:// or rediss:// URL")
    if not 0 < settings.redis.heartbeat_s * 2 <= settings.redis.lease_ttl_s:
        raise ConfigError("redis.heartbeat_s", "must be above 0 and at most half of redis.lease_ttl_s")
    if not settings.agents:
        raise ConfigError("agents", "define at least one agent with [[agents]]")
    _validate_sip(settings)
    _validate_exposure(settings)
    endpoint = settings.telemetry.traces_endpoint
    if endpoint and not re.fullmatch(r"https?://[^/?#\s]+(/\S*)?", endpoint):
        raise ConfigError("telemetry.traces_endpoint", f"{endpoint!r} must be an http:// or https:// URL")


def _validate_exposure(settings: Settings) -> None:
    """[auth] and the [server] keys that decide who may reach the API."""
    auth, server = settings.auth, settings.server
    for index, key in enumerate(auth.api_keys):
        if not key or any(c.isspace() or c == "," for c in key):
            raise ConfigError(f"auth.api_keys[{index}]", "must be non-empty, without spaces or commas")
    if auth.create_room_per_minute < 1:
        raise ConfigError("auth.create_room_per_minute", "must be at least 1")
    if server.public_url and not re.fullmatch(r"https?://[^/?#\s]+/?", server.public_url):
        raise ConfigError("server.public_url", "must be http(s)://host[:port], e.g. https://bot.example.com")
    for index, origin in enumerate(server.allowed_origins):
        if not re.fullmatch(r"https?://[^/?#\s]+", origin):
            raise ConfigError(f"server.allowed_origins[{index}]", f"{origin!r} must be scheme://host[:port]")
    for index, host in enumerate(server.allowed_hosts):
        if not host or any(c in host for c in "/: \t"):
            raise ConfigError(f"server.allowed_hosts[{index}]", f"{host!r} must be a host name without port")
    for index, proxy in enumerate(server.trusted_proxies):
        try:
            ipaddress.ip_network(proxy, strict=False)
        except ValueError:
            raise ConfigError(f"server.trusted_proxies[{index}]", f"{proxy!r} is not an IP or CIDR") from None


def _validate_sip(settings: Settings) -> None:
    sip = settings.sip
    for key in ("port", "rtp_port_start", "rtp_port_end", "health_port", "redis_port"):
        _check_port(f"sip.{key}", getattr(sip, key))
    if sip.rtp_port_end <= sip.rtp_port_start:
        raise ConfigError("sip.rtp_port_end", "must be greater than sip.rtp_port_start")
    if sip.ringing_timeout_s < 1:
        raise ConfigError("sip.ringing_timeout_s", "must be at least 1")
    for key in ("max_outbound_concurrent", "outbound_per_hour"):
        if getattr(sip, key) < 0:
            raise ConfigError(f"sip.{key}", "must be 0 (no outbound calls) or more")
    names: set[str] = set()
    for index, route in enumerate(sip.inbound):
        where = f"sip.inbound[{index}]"
        _check_sip_name(f"{where}.name", route.name, names)
        if settings.agent(route.agent_id) is None:
            raise ConfigError(f"{where}.agent_id", f"no agent with id {route.agent_id!r} is defined")
        if not (route.numbers or route.allowed_addresses or route.auth_username):
            # An open trunk would let anyone who finds the SIP port phone the agent.
            raise ConfigError(
                where, "needs numbers, allowed_addresses or auth_username to say whose calls it takes"
            )
        if bool(route.auth_username) != bool(route.auth_password):
            raise ConfigError(f"{where}.auth_password", "auth_username and auth_password go together")
    names.clear()
    for index, trunk in enumerate(sip.outbound):
        where = f"sip.outbound[{index}]"
        _check_sip_name(f"{where}.name", trunk.name, names)
        if not trunk.address:
            raise ConfigError(f"{where}.address", "must name the SIP server, e.g. sip.example.com:5060")
        if trunk.transport not in SIP_TRANSPORTS:
            raise ConfigError(
                f"{where}.transport", f"{trunk.transport!r} is not one of {', '.join(SIP_TRANSPORTS)}"
            )
        for prefix in trunk.allowed_prefixes:
            if not E164_PREFIX_PATTERN.fullmatch(prefix):
                raise ConfigError(
                    f"{where}.allowed_prefixes", f'{prefix!r} must be \'+\' and digits, e.g. "+1555" or "+44"'
                )


def _check_sip_name(key: str, name: str, seen: set[str]) -> None:
    if not IDENTIFIER_PATTERN.fullmatch(name):
        raise ConfigError(key, f"{name!r} must be 1 to 64 letters, digits, '_' or '-'")
    if name in seen:
        raise ConfigError(key, f"{name!r} is used twice")
    seen.add(name)


def _check_port(key: str, port: int) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(key, f"must be a port number from 1 to 65535, got {port}")


def _typed(key: str, value: Any, hint: Any) -> Any:
    expected = _base_type(hint)
    # bool is an int in Python; a config that says `port = true` is still wrong.
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ConfigError(key, f"must be {_type_name(expected)}, got {value!r}")
    return value


def _from_env(name: str, text: str, hint: Any) -> Any:
    if typing.get_origin(hint) is tuple:
        # A list in one variable: comma-separated, as in VOICEBOT_AUTH_API_KEYS=key1,key2.
        return tuple(item.strip() for item in text.split(",") if item.strip())
    expected = _base_type(hint)
    try:
        if expected is bool:
            lowered = text.strip().lower()
            if lowered not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(text)
            return lowered in {"1", "true", "yes"}
        return expected(text)
    except ValueError:
        raise ConfigError(name, f"must be {_type_name(expected)}, got {text!r}") from None


def _base_type(hint: Any) -> type[Any]:
    if isinstance(hint, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    assert isinstance(hint, type)
    return hint


def _type_name(expected: type[Any]) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}[expected]


def _known(names: Any) -> str:
    return ", ".join(sorted(names))
