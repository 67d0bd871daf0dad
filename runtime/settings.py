"""Runtime settings from the environment (``PDC_*``), validated at startup.

Without an admin token or encryption key, development values are generated into
the data directory (file mode 0600) with a warning; ``PDC_ENV=production``
refuses to start without them instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from pagerduty_connector.component.errors import ConfigurationError
from pagerduty_connector.component.redact import get_logger, register_secret

log = get_logger("settings")


class RuntimeSettings(BaseSettings):
    """What ``pdc serve`` needs; every field can be set as ``PDC_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="PDC_", extra="ignore")

    env: Literal["development", "production"] = "development"
    data_dir: Path = Path(".pdc")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default: SQLite file in the data directory."
    )
    public_url: str = Field(
        default="http://127.0.0.1:8000",
        description="Base URL PagerDuty reaches us at; default: http://<host>:<port>.",
    )
    admin_token: str | None = Field(default=None, repr=False)
    secret_key: str | None = Field(default=None, repr=False, description="Fernet key.")
    # 128, not 4 or 32: each queue poll (every 0.25 s) starts at most this many runs of a
    # flow, and a run waits for its checkpoints' batch, so the runs a flow has in flight
    # are what bounds its rate: at 200 deliveries/s on two cores 32 finished 87 runs/s,
    # 64 119, 128 138-145, 256 no more (bench/flow_throughput.py). PagerDuty's own rate is
    # kept by the client's request budget, not by this.
    flow_concurrency: int = Field(
        default=128, ge=1, le=256, description="Executions of one flow running at once, everywhere."
    )
    executor_id: str = Field(
        default="local",
        pattern=r"^[A-Za-z0-9._-]{1,100}$",
        description="This process's name for DBOS: unique per replica, the same after a restart.",
    )
    otlp_traces_endpoint: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="OTLP/HTTP endpoint to export traces of runs and steps to "
        "(e.g. http://collector:4318/v1/traces); needs the otel extra.",
    )
    queue_polling_interval: float = Field(
        default=0.25,
        gt=0,
        le=10,
        description="How often DBOS looks for queued runs (and, on SQLite, notifications) (s).",
    )
    heartbeat_interval: float = Field(default=5.0, gt=0, description="Seconds between beats.")
    executor_timeout: float = Field(
        default=30.0,
        gt=0,
        description="Seconds without a beat after which another process takes over the runs.",
    )
    step_attempts: int = Field(default=4, ge=1, le=20, description="Tries of a flow step.")
    step_backoff: float = Field(default=1.0, ge=0, description="First retry's delay (s).")
    step_backoff_max: float = Field(default=30.0, ge=0)
    stop_grace: float = Field(
        default=25.0,
        ge=0,
        le=3600,
        description="On SIGTERM, seconds the steps in flight have to finish before they are "
        "cut (and sent again when their runs resume); open requests get as long.",
    )
    waiting_concurrency: int = Field(
        default=256,
        ge=1,
        le=100_000,
        description="Executions of one flow with a wait step running (or waiting) at once.",
    )
    http_allow: str | None = Field(
        default=None,
        description="Hosts and networks an http step may reach besides public addresses "
        "(comma-separated: hooks.internal, 10.0.0.0/8, 127.0.0.1).",
    )
    role: Literal["all", "web", "worker"] = Field(
        default="all",
        description="all: serve and run flows; web: serve only (flows run in workers); "
        "worker: run flows only, no HTTP.",
    )
    flow_workers: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Child processes that run the flows; with any, this process only serves.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    max_connections: int = Field(
        default=1000,
        ge=16,
        le=1_000_000,
        description="Client connections open at once; at the limit, the one that has waited "
        "longest for a request head makes room.",
    )
    header_timeout: float = Field(
        default=10.0, gt=0, le=300, description="Seconds a request head may take to arrive."
    )
    body_timeout: float = Field(
        default=30.0, gt=0, le=3600, description="Seconds a request body may take after its head."
    )
    keepalive_timeout: float = Field(
        default=5.0, gt=0, le=300, description="Seconds an idle kept-alive connection stays open."
    )

    @model_validator(mode="after")
    def _public_url_default(self) -> RuntimeSettings:
        # Unset, the public URL is where this process listens (``pdc serve --port
        # 8001`` must not subscribe PagerDuty to port 8000).
        if "public_url" not in self.model_fields_set:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
            self.public_url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        return self

    def public_url_mismatch(self) -> str | None:
        """A warning when the public URL names this machine on another port than the one
        it listens on: PagerDuty's deliveries would go to another process, or nowhere."""
        url = urlsplit(self.public_url)
        if url.hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
            return None
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:
            return None
        if port == self.port:
            return None
        return (
            f"PDC_PUBLIC_URL {self.public_url} is this machine's port {port}, but the runtime "
            f"listens on {self.port}: deliveries would go elsewhere; set PDC_PUBLIC_URL to "
            f"http://{url.hostname}:{self.port} (or leave it unset)"
        )

    @model_validator(mode="after")
    def _workers_serve(self) -> RuntimeSettings:
        if self.flow_workers and self.role == "worker":
            raise ValueError("PDC_FLOW_WORKERS starts workers from a serving process, not a worker")
        return self

    @property
    def serves(self) -> bool:
        """Whether this process answers HTTP (intake, API, console, consent)."""
        return self.role != "worker"

    @property
    def runs_flows(self) -> bool:
        """Whether this process runs flows itself (rather than leaving them to workers)."""
        return self.role == "worker" or (self.role == "all" and not self.flow_workers)

    @property
    def executor(self) -> str:
        """This process's DBOS executor id. A process that runs no flows owns no
        workflows, so it is named apart (``<id>.web``): its start must never recover,
        as its own, the runs of the worker that has the plain id."""
        return self.executor_id if self.runs_flows else f"{self.executor_id}.web"

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to ``sqlite+aiosqlite`` in the data directory."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'pdc.db').resolve()}"


# prometheus-client's own variable: set before it is imported, in a process and in the
# flow workers it starts (they inherit it), it keeps every metric's value in a file of
# that folder, and ``/metrics`` sums them (``runtime/metrics.py``).
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"


def share_metrics(settings: RuntimeSettings) -> Path:
    """Give this process and its flow workers a fresh folder for their metrics (a stopped
    process's values mean nothing to a new one: counters start again); folders left by
    processes no longer running are removed."""
    root = settings.data_dir / "metrics"
    root.mkdir(parents=True, exist_ok=True)
    for old in root.iterdir():
        pid = old.name.split("-", 1)[0]
        if pid.isdigit() and not _running(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    folder = root / f"{os.getpid()}-{secrets.token_hex(4)}"
    folder.mkdir()
    os.environ[METRICS_ENV] = str(folder)
    return folder


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dev_secret(data_dir: Path, name: str, make: callable) -> str:  # type: ignore[valid-type]
    """The development secret kept in ``data_dir/name``, made on first use. Made whole in
    a file of its own, then linked into place: a ``pdc token`` racing ``pdc serve`` (the
    quickstart starts both at once) both read the one that won, never a half-written one."""
    path = data_dir / name
    if path.exists():
        return path.read_text(encoding="utf-8").strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    value = make()
    fd, draft = tempfile.mkstemp(prefix=f".{name}.", dir=data_dir)  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(value)
        os.link(draft, path)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    finally:
        os.unlink(draft)
    log.warning(
        "generated a development %s in %s; set PDC_%s for real deployments",
        name.replace("-", " "),
        path,
        name.upper().replace("-", "_"),
    )
    return value


def load_settings(**overrides: object) -> RuntimeSettings:
    """Read, validate and complete the settings, or raise ``ConfigurationError``."""
    try:
        settings = RuntimeSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"PDC_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
            if e["loc"]
            else e["msg"].removeprefix("Value error, ")
            for e in exc.errors()
        )
        raise ConfigurationError(f"invalid runtime settings: {problems}") from None
    missing = [n for n in ("admin_token", "secret_key") if not getattr(settings, n)]
    if missing and settings.env == "production":
        names = ", ".join(f"PDC_{n.upper()}" for n in missing)
        raise ConfigurationError(f"PDC_ENV=production needs {names}; refusing to start")
    if not settings.admin_token:
        settings.admin_token = _dev_secret(
            settings.data_dir, "admin-token", lambda: secrets.token_urlsafe(32)
        )
    if not settings.secret_key:
        settings.secret_key = _dev_secret(
            settings.data_dir, "secret-key", lambda: Fernet.generate_key().decode()
        )
    try:
        Fernet(settings.secret_key.encode())
    except ValueError:
        raise ConfigurationError(
            "PDC_SECRET_KEY is not a Fernet key (32 url-safe base64-encoded bytes); "
            "generate one with: python -c 'from cryptography.fernet import Fernet; "
            "print(Fernet.generate_key().decode())'"
        ) from None
    if settings.otlp_traces_endpoint:
        try:
            import opentelemetry.exporter.otlp.proto.http  # noqa: F401
        except ImportError:
            raise ConfigurationError(
                "PDC_OTLP_TRACES_ENDPOINT needs OpenTelemetry: "
                "pip install 'pagerduty-connector[otel]'"
            ) from None
    register_secret(settings.admin_token)
    register_secret(settings.secret_key)
    return settings
