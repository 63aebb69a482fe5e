"""Where messages go: email (SMTP), MQTT and an HTTP webhook.

Each sink delivers one message at a time and says how it failed:
:class:`TransientError` (the sink is down, slow or busy: the outbox backs off
and tries again, forever) or :class:`PermanentError` (the sink refused this
message itself: it is marked failed, and the ones after it go on).

Libraries (docs/messages.md says more):
- SMTP: the standard library's :mod:`smtplib` in a worker thread.  A gateway
  sends a handful of mails an hour; a thread per attempt costs nothing, and
  the standard library's STARTTLS, AUTH and :mod:`email` header encoding are
  the best-reviewed there are.  No dependency to track.
- MQTT: aiomqtt on paho-mqtt, the maintained asyncio client.  QoS 1 needs a
  real session (PUBACK, resends): not something to hand-roll.  A sink with no
  host of its own publishes through the daemon's one MQTT connection (``[mqtt]``,
  which Home Assistant uses too): the daemon hands it a :data:`Publish`.
- Webhook: :mod:`urllib.request` in a worker thread: one POST with a timeout
  and certificate checking; aiohttp or httpx would add several packages for
  that.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from btgw.config import EmailSinkConfig, MqttSinkConfig, WebhookSinkConfig
from btgw.messages.model import Message, email_message, json_body, mqtt_topic, signature

if TYPE_CHECKING:
    import aiomqtt

USER_AGENT = "btgw-messages/1"

Publish = Callable[[str, bytes], Awaitable[None]]
"""Publish ``(topic, payload)`` at QoS 1 over a connection someone else keeps;
raises :class:`TransientError` when it is down."""


class SinkError(Exception):
    """A delivery attempt failed."""


class TransientError(SinkError):
    """Try again later: the sink is unreachable, busy or timed out."""


class PermanentError(SinkError):
    """The sink refused this message for good."""


class Sink(Protocol):
    """A destination for messages; ``deliver`` raises :class:`SinkError`."""

    @property
    def name(self) -> str: ...
    def wants(self, message: Message) -> bool: ...
    async def deliver(self, message: Message) -> None: ...
    async def close(self) -> None: ...


class _Filtered:
    def __init__(self, config: EmailSinkConfig | MqttSinkConfig | WebhookSinkConfig) -> None:
        self._phones = frozenset(config.phones)
        self._kinds = frozenset(config.kinds)
        self._name = config.name

    @property
    def name(self) -> str:
        return self._name

    def wants(self, message: Message) -> bool:
        return (not self._phones or message.phone in self._phones) and (
            message.kind.value in self._kinds
        )

    async def close(self) -> None:
        return None


class EmailSink(_Filtered):
    def __init__(self, config: EmailSinkConfig) -> None:
        super().__init__(config)
        self._config = config

    async def deliver(self, message: Message) -> None:
        await asyncio.to_thread(self._send, message)

    def _send(self, message: Message) -> None:
        c = self._config
        mail = email_message(message, c.sender, c.to)
        context = ssl.create_default_context()
        try:
            smtp: smtplib.SMTP
            if c.tls == "implicit":
                smtp = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=context)
            else:
                smtp = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
            with smtp:
                if c.tls == "starttls":
                    smtp.starttls(context=context)
                if c.user is not None and c.secret is not None:
                    smtp.login(c.user, c.secret)
                smtp.send_message(mail, from_addr=c.sender, to_addrs=c.to)
        except smtplib.SMTPResponseException as exc:
            # 5xx: the server refuses this mail for good (bad recipient,
            # policy); 4xx: try later.  A failed AUTH is the owner's to fix
            # but not this message's fault: keep it and retry.
            if 500 <= exc.smtp_code < 600 and not isinstance(exc, smtplib.SMTPAuthenticationError):
                raise PermanentError(f"SMTP {exc.smtp_code}") from exc
            raise TransientError(f"SMTP {exc.smtp_code}") from exc
        except smtplib.SMTPRecipientsRefused as exc:
            raise PermanentError("SMTP refused every recipient") from exc
        except (smtplib.SMTPException, OSError) as exc:
            raise TransientError(f"SMTP {type(exc).__name__}: {exc}") from exc


class MqttSink(_Filtered):
    """Keeps one broker session while it works; a failure drops it and the
    next attempt connects afresh."""

    def __init__(self, config: MqttSinkConfig) -> None:
        super().__init__(config)
        self._config = config
        self._client: aiomqtt.Client | None = None

    async def _connect(self) -> aiomqtt.Client:
        # Imported here: paho and aiomqtt cost the daemon ~3 MB of RSS, paid
        # only when an MQTT sink is configured.
        import aiomqtt  # noqa: PLC0415

        c = self._config
        assert c.host is not None  # build_sinks gives a sink without one the shared link
        client = aiomqtt.Client(
            c.host,
            c.port,
            username=c.user,
            password=c.secret,
            identifier=c.client_id,
            timeout=c.timeout,
            tls_context=ssl.create_default_context() if c.tls else None,
        )
        await client.__aenter__()
        return client

    async def deliver(self, message: Message) -> None:
        import aiomqtt  # noqa: PLC0415 - see _connect

        try:
            if self._client is None:
                self._client = await self._connect()
            await self._client.publish(
                mqtt_topic(self._config.topic_prefix, message),
                json_body(message),
                qos=1,
                timeout=self._config.timeout,
            )
        except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
            await self.close()
            raise TransientError(f"MQTT {type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            import aiomqtt  # noqa: PLC0415 - see _connect

            # Already gone: nothing left to close.
            with contextlib.suppress(aiomqtt.MqttError, OSError):
                await client.__aexit__(None, None, None)


class SharedMqttSink(_Filtered):
    """Publishes over the daemon's own MQTT connection (a sink with no host)."""

    def __init__(self, config: MqttSinkConfig, publish: Publish) -> None:
        super().__init__(config)
        self._prefix = config.topic_prefix
        self._timeout = config.timeout
        self._publish = publish

    async def deliver(self, message: Message) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._publish(mqtt_topic(self._prefix, message), json_body(message))
        except TimeoutError as exc:
            raise TransientError(f"MQTT publish took over {self._timeout:g} s") from exc


class WebhookSink(_Filtered):
    def __init__(self, config: WebhookSinkConfig) -> None:
        super().__init__(config)
        self._config = config

    async def deliver(self, message: Message) -> None:
        await asyncio.to_thread(self._post, message)

    def _post(self, message: Message) -> None:
        c = self._config
        body = json_body(message)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": USER_AGENT,
            "X-Btgw-Id": message.id,
        }
        if c.secret is not None:
            headers["X-Btgw-Signature"] = signature(c.secret.encode(), body)
        request = urllib.request.Request(  # noqa: S310 - config allows http(s) URLs only
            c.url, data=body, headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=c.timeout) as reply:  # noqa: S310
                reply.read()
        except urllib.error.HTTPError as exc:
            # 4xx other than timeout/rate limit: the receiver rejects this
            # message; anything else may pass on a later attempt.
            if 400 <= exc.code < 500 and exc.code not in (408, 425, 429):
                raise PermanentError(f"HTTP {exc.code}") from exc
            raise TransientError(f"HTTP {exc.code}") from exc
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            raise TransientError(f"HTTP {type(exc).__name__}: {exc}") from exc


def build_sinks(
    configs: Iterable[EmailSinkConfig | MqttSinkConfig | WebhookSinkConfig],
    shared_mqtt: Publish | None = None,
) -> list[Sink]:
    """The sinks for the configured ``[[messages.*]]`` tables; MQTT sinks with
    no host publish through ``shared_mqtt`` (the config check makes sure
    there is an ``[mqtt]`` to give one)."""
    sinks: list[Sink] = []
    for c in configs:
        if isinstance(c, EmailSinkConfig):
            sinks.append(EmailSink(c))
        elif isinstance(c, MqttSinkConfig) and c.host is None:
            if shared_mqtt is None:
                raise ValueError(f"MQTT sink {c.name!r} has no host and there is no [mqtt]")
            sinks.append(SharedMqttSink(c, shared_mqtt))
        elif isinstance(c, MqttSinkConfig):
            sinks.append(MqttSink(c))
        else:
            sinks.append(WebhookSink(c))
    return sinks
