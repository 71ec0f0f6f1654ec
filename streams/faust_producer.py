"""The worker's Faust producer with the durability of every other producer of the project: acks=all and idempotent.

faust-streaming's aiokafka producer already asks for ``acks=-1`` (its ``producer_acks`` default, set explicitly in
streams/app.py), but turns idempotence on only inside its transactions (``processing_guarantee="exactly_once"``);
without it a send retried after a broker died or a partition's leader moved can be written twice. Faust offers no
setting for it, so :func:`install` points the ``kafka://`` transport at a subclass whose producer adds
:data:`streams.kafka_security.PRODUCER_DURABILITY` to the aiokafka arguments. Transactional producers (which Faust
makes idempotent itself) are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport import drivers
from faust.transport.drivers import aiokafka as faust_aiokafka

from streams.kafka_security import PRODUCER_DURABILITY


class DurableProducer(faust_aiokafka.Producer):
    def _settings_extra(self) -> Mapping[str, Any]:
        return {**super()._settings_extra(), **PRODUCER_DURABILITY}


class DurableTransport(faust_aiokafka.Transport):
    Producer = DurableProducer


def install() -> None:
    """Make ``kafka://`` (and ``aiokafka://``) broker URLs use :class:`DurableTransport`; idempotent."""
    for scheme in ("kafka", "aiokafka"):
        drivers.TRANSPORTS.aliases[scheme] = f"{__name__}:DurableTransport"
