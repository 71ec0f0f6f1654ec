"""Who each Kafka client is: the one place that turns Settings into a client's security arguments.

Every aiokafka producer, consumer and admin client of the project (API, tools, test and bench harnesses) is built
with :func:`client_kwargs` (producers with :func:`producer_kwargs`: acks=all, idempotent), and the worker's Faust
app with :func:`faust_credentials`, so no caller repeats it.

Each caller names its **role**, the principal it is on the local stack: ``worker`` (the Faust worker), ``api``
(writes uploads, reads results), ``admin`` (the stack's tools: topics, ACLs, group offsets; the only super user).
Where the credentials come from:

* ``KAFKA_SASL_USERNAME`` / ``KAFKA_SASL_PASSWORD`` (with ``KAFKA_SECURITY_PROTOCOL``) when set: one process,
  one principal, whatever the role (production, compose).
* otherwise, in development mode only (``APP_ENV=development``: make, the tests, the demo), the local stack's
  generated file ``{STACK_DIR}/kafka/credentials.env`` (scripts/stack.sh, mode 600) when it exists: the role's
  own principal. A stack started before SASL has no such file and is reached with PLAINTEXT.
* otherwise ``KAFKA_SECURITY_PROTOCOL`` alone (PLAINTEXT when unset; production refuses that, see
  ``models.settings.check_secrets``).

This module imports neither Faust nor aiokafka at import time: the API imports it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr

from models.settings import Settings

Role = Literal["admin", "api", "worker"]


@dataclass(frozen=True)
class KafkaIdentity:
    """A client's security protocol and, for SASL, its mechanism and credentials."""

    protocol: str
    mechanism: str | None = None
    username: str | None = None
    password: SecretStr | None = None

    @property
    def sasl(self) -> bool:
        return self.protocol.startswith("SASL_")

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    def __repr__(self) -> str:  # never the password
        return f"KafkaIdentity(protocol={self.protocol!r}, mechanism={self.mechanism!r}, username={self.username!r})"


def stack_credentials_file(settings: Settings) -> Path:
    return Path(settings.stack_dir) / "kafka" / "credentials.env"


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments and blank lines skipped); the file scripts/stack.sh writes."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def identity(settings: Settings, role: Role) -> KafkaIdentity:
    """The principal a client in ``role`` connects as (see the module docstring for the order)."""
    if settings.kafka_sasl_username is not None or settings.kafka_sasl_password is not None:
        return KafkaIdentity(settings.kafka_security_protocol or "SASL_PLAINTEXT", settings.kafka_sasl_mechanism,
                             settings.kafka_sasl_username, settings.kafka_sasl_password)
    if settings.app_env == "development" and settings.kafka_security_protocol in (None, "SASL_PLAINTEXT"):
        path = stack_credentials_file(settings)
        if path.is_file():
            stack = read_env_file(path)
            password = stack.get(f"KAFKA_{role.upper()}_PASSWORD")
            if not password:
                raise RuntimeError(f"{path} has no password for the Kafka principal {role!r}: restart the stack")
            return KafkaIdentity(stack.get("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
                                 stack.get("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"), role, SecretStr(password))
    return KafkaIdentity(settings.kafka_security_protocol or "PLAINTEXT")


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """Verifies the broker (KAFKA_SSL_CAFILE or the system's CAs); presents a client certificate if configured."""
    context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    if settings.kafka_ssl_certfile:
        context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile)
    return context


def security_kwargs(settings: Settings, role: Role) -> dict[str, Any]:
    """aiokafka's security arguments (``security_protocol``, ``sasl_*``, ``ssl_context``) for ``role``."""
    ident = identity(settings, role)
    kwargs: dict[str, Any] = {"security_protocol": ident.protocol}
    if ident.sasl:
        kwargs.update(sasl_mechanism=ident.mechanism, sasl_plain_username=ident.username,
                      sasl_plain_password=ident.password.get_secret_value() if ident.password else None)
    if ident.tls:
        kwargs["ssl_context"] = ssl_context(settings)
    return kwargs


def client_kwargs(settings: Settings, role: Role) -> dict[str, Any]:
    """``bootstrap_servers`` plus :func:`security_kwargs`: the common arguments of every aiokafka client."""
    return {"bootstrap_servers": settings.kafka_bootstrap_servers, **security_kwargs(settings, role)}


# What every producer of the project writes with (API, relay, tools, test and bench harnesses; the worker's Faust
# producer through streams/faust_producer.py): acknowledged only once every in-sync replica has the record
# (min.insync.replicas of them: 2 of 3 on the three-broker stack), and idempotent, so the retries after a broker
# dies or a leader moves neither lose nor duplicate a record.
PRODUCER_DURABILITY: dict[str, Any] = {"acks": "all", "enable_idempotence": True}


def producer_kwargs(settings: Settings, role: Role, **extra: Any) -> dict[str, Any]:
    """:func:`client_kwargs` plus :data:`PRODUCER_DURABILITY`: the arguments of every ``AIOKafkaProducer``.

    ``extra`` overrides them; an explicit weaker ``acks`` (the bench's acks=1) turns idempotence off, which needs
    acks=all.
    """
    kwargs = {**client_kwargs(settings, role), **PRODUCER_DURABILITY, **extra}
    if kwargs["acks"] not in ("all", -1) and "enable_idempotence" not in extra:
        kwargs["enable_idempotence"] = False
    return kwargs


def identity_env(settings: Settings, role: Role) -> dict[str, str]:
    """``role``'s identity as explicit ``KAFKA_*`` variables, for a subprocess that runs outside development
    mode (where the stack's credentials file is not read) but must reach the local stack as that principal."""
    ident = identity(settings, role)
    env = {"KAFKA_SECURITY_PROTOCOL": ident.protocol}
    if ident.sasl and ident.username and ident.password:
        env.update(KAFKA_SASL_MECHANISM=ident.mechanism or "", KAFKA_SASL_USERNAME=ident.username,
                   KAFKA_SASL_PASSWORD=ident.password.get_secret_value())
    return env


def faust_credentials(settings: Settings, role: Role = "worker") -> Any:
    """Faust's ``broker_credentials`` for ``role`` (None for PLAINTEXT)."""
    import faust

    ident = identity(settings, role)
    if ident.sasl:
        return faust.SASLCredentials(
            username=ident.username, password=ident.password.get_secret_value() if ident.password else None,
            mechanism=ident.mechanism, ssl_context=ssl_context(settings) if ident.tls else None,
        )
    if ident.tls:
        return faust.SSLCredentials(ssl_context(settings))
    return None
