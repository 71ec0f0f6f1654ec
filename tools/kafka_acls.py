"""What each Kafka principal may do: the ACLs of the local stack and of docker-compose.kafka.yml.

The broker runs with ``allow.everyone.if.no.acl.found=false`` and ``super.users=User:admin``: whatever is not
granted here is refused. An anonymous client gets nothing (it cannot even pass the SASL handshake).

* ``api``: write ``waste.uploads.completed``, read ``waste.analysis.results`` (without a consumer group: every API
  instance reads the whole topic). Nothing else: no internal topic, no dead letters, no topic creation.
* ``worker``: read its source topics, write the topics it produces (hashed images, vision requests, maintenance,
  results, dead letters), and everything Faust does under its app id: changelog, repartition and leader topics
  (read, write, create, describe) and consumer groups, all named ``{APP_ID}...`` (``--worker-prefix``).
* ``admin``: super user (the broker itself, topic creation, these ACLs, group offsets); needs no ACL.

    python -m tools.kafka_acls apply [--worker-prefix waste-]   # idempotent; run by scripts/stack.sh up
    python -m tools.kafka_acls show                              # the ACLs on the broker, one per line

Runs as the admin principal (development: the stack's credentials file; else KAFKA_SASL_USERNAME/PASSWORD).
aiokafka has no public ACL API, so the CreateAcls/DescribeAcls requests (v1, which Kafka 4.x serves) are sent
through the admin client's connection.
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import sys
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest

from models.settings import Settings
from streams import kafka_security, topics


class Resource(enum.IntEnum):  # Kafka's ResourceType codes
    ANY = 1
    TOPIC = 2
    GROUP = 3
    CLUSTER = 4
    TRANSACTIONAL_ID = 5


class Pattern(enum.IntEnum):  # PatternType
    ANY = 1
    LITERAL = 3
    PREFIXED = 4


class Op(enum.IntEnum):  # AclOperation
    ANY = 1
    ALL = 2
    READ = 3
    WRITE = 4
    CREATE = 5
    DELETE = 6
    ALTER = 7
    DESCRIBE = 8
    CLUSTER_ACTION = 9
    DESCRIBE_CONFIGS = 10
    ALTER_CONFIGS = 11
    IDEMPOTENT_WRITE = 12


ALLOW = 3
ANY_PERMISSION = 1


@dataclass(frozen=True, order=True)
class Acl:
    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    op: Op

    def __str__(self) -> str:
        return f"{self.principal} {self.op.name} {self.resource.name}:{self.pattern.name}:{self.name}"


# What the worker writes (upload events too: storage notifications become jobs); it reads topics.WORKER_SOURCES.
WORKER_SINKS = (topics.UPLOADS_COMPLETED, topics.IMAGES_HASHED, topics.VISION_REQUESTS, topics.DEDUPE_MAINTENANCE,
                topics.ANALYSIS_RESULTS,
                topics.DEAD_LETTER)


def wanted_acls(worker_prefix: str, api_user: str = "api", worker_user: str = "worker") -> list[Acl]:
    """Every ALLOW rule of the project, for principals ``User:api`` and ``User:worker`` (names overridable)."""
    api, worker = f"User:{api_user}", f"User:{worker_user}"
    acls = [
        Acl(api, Resource.TOPIC, topics.UPLOADS_COMPLETED, Pattern.LITERAL, Op.WRITE),
        Acl(api, Resource.TOPIC, topics.UPLOADS_COMPLETED, Pattern.LITERAL, Op.DESCRIBE),
        Acl(api, Resource.TOPIC, topics.ANALYSIS_RESULTS, Pattern.LITERAL, Op.READ),
        Acl(api, Resource.TOPIC, topics.ANALYSIS_RESULTS, Pattern.LITERAL, Op.DESCRIBE),
    ]
    acls += [Acl(worker, Resource.TOPIC, name, Pattern.LITERAL, Op.READ) for name in topics.WORKER_SOURCES]
    acls += [Acl(worker, Resource.TOPIC, name, Pattern.LITERAL, Op.WRITE) for name in WORKER_SINKS]
    acls += [Acl(worker, Resource.TOPIC, name, Pattern.LITERAL, Op.DESCRIBE)
             for name in sorted(set(topics.WORKER_SOURCES) | set(WORKER_SINKS))]
    # Faust's own topics ({app_id}-{table}-changelog, ...-repartition, {app_id}-__assignor-__leader) and groups.
    acls += [Acl(worker, Resource.TOPIC, worker_prefix, Pattern.PREFIXED, op)
             for op in (Op.READ, Op.WRITE, Op.CREATE, Op.DESCRIBE, Op.DESCRIBE_CONFIGS)]
    acls += [Acl(worker, Resource.GROUP, worker_prefix, Pattern.PREFIXED, op) for op in (Op.READ, Op.DESCRIBE)]
    return acls


def _admin(settings: Settings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**kafka_security.client_kwargs(settings, "admin"), client_id="waste-acls")


async def list_acls(settings: Settings) -> list[Acl]:
    """The ALLOW rules on the broker (any resource, principal, operation)."""
    admin = _admin(settings)
    await admin.start()
    try:
        request = DescribeAclsRequest(Resource.ANY, None, Pattern.ANY, None, None, Op.ANY, ANY_PERMISSION)  # type: ignore[arg-type]
        response = await admin._send_request(request)  # noqa: SLF001 (no public ACL API in aiokafka)
        if response.error_code:
            raise RuntimeError(f"DescribeAcls failed: error {response.error_code} {response.error_message}")
        found = []
        for resource_type, name, pattern, entries in response.resources:
            for principal, _host, op, permission in entries:
                if permission == ALLOW:
                    found.append(Acl(principal, Resource(resource_type), name, Pattern(pattern), Op(op)))
        return sorted(found)
    finally:
        await admin.close()


async def apply_acls(settings: Settings, acls: list[Acl]) -> list[Acl]:
    """Create the rules not on the broker yet; returns those created."""
    existing = set(await list_acls(settings))
    missing = [acl for acl in acls if acl not in existing]
    admin = _admin(settings)
    await admin.start()
    try:
        for acl in missing:
            request = CreateAclsRequest(acl.resource, acl.name, acl.pattern, acl.principal, "*", acl.op, ALLOW)
            response = await admin._send_request(request)  # noqa: SLF001
            for code, message in response.creation_responses:
                if code:
                    raise RuntimeError(f"creating ACL {acl} failed: error {code} {message}")
    finally:
        await admin.close()
    # The authorizer applies new rules once the metadata log has them: wait until they are listed.
    deadline = asyncio.get_running_loop().time() + 30
    while not set(acls) <= set(await list_acls(settings)):
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError("ACLs created but not listed by the broker after 30 s")
        await asyncio.sleep(0.2)
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.kafka_acls", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    apply = commands.add_parser("apply", help="grant the api and worker principals their rights (idempotent)")
    apply.add_argument("--worker-prefix", help="prefix of the worker's groups and internal topics (default: APP_ID)")
    apply.add_argument("--api-user", default="api")
    apply.add_argument("--worker-user", default="worker")
    commands.add_parser("show", help="list the ACLs on the broker")
    args = parser.parse_args(argv)
    settings = Settings()  # type: ignore[call-arg]  # from the environment
    if args.command == "apply":
        acls = wanted_acls(args.worker_prefix or settings.app_id, args.api_user, args.worker_user)
        created = asyncio.run(apply_acls(settings, acls))
        print(json.dumps({"acls": len(acls), "created": len(created)}))
    else:
        for acl in asyncio.run(list_acls(settings)):
            print(acl)
    return 0


if __name__ == "__main__":
    sys.exit(main())
