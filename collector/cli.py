"""``traceduck collector`` and ``traceduck keys``: run the service, manage its API keys."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import sys

from traceduck.cli import command, store_argument
from traceduck.governance import audit
from traceduck.store import keys as key_store
from traceduck.store.duckdb_store import DuckDBStore

from .settings import CollectorSettings

LOOPBACK = "127.0.0.1"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _collector_arguments(parser: argparse.ArgumentParser) -> None:
    env = CollectorSettings.from_env()
    parser.add_argument("--store", default=env.store, help=f"DuckDB file of the store (env TRACEDUCK_STORE; default {env.store})")
    parser.add_argument("--host", default=env.host, help=f"address to listen on (env TRACEDUCK_HOST; default {env.host})")
    parser.add_argument("--port", type=int, default=env.port, help=f"port (env TRACEDUCK_PORT; default {env.port})")
    parser.add_argument("--api-key-header", default=env.api_key_header,
                        help="extra header that may carry an API key besides 'Authorization: Bearer' "
                             f"(env TRACEDUCK_API_KEY_HEADER; default {env.api_key_header})")
    parser.add_argument("--max-queued-spans", type=int, default=env.max_queued_spans,
                        help="spans waiting to be written before ingest answers 429 "
                             f"(env TRACEDUCK_MAX_QUEUED_SPANS; default {env.max_queued_spans})")
    parser.add_argument("--ack-timeout", type=float, default=env.ack_timeout,
                        help="seconds ingest waits for a durable write before answering 503 "
                             f"(env TRACEDUCK_ACK_TIMEOUT; default {env.ack_timeout})")
    parser.add_argument("--purge-interval", type=float, default=env.purge_interval,
                        help="seconds between runs of the retention job, 0 for none "
                             f"(env TRACEDUCK_PURGE_INTERVAL; default {env.purge_interval:g})")


@command("collector", "run the collector service (OTLP/HTTP ingest, search, feedback and keys APIs)", _collector_arguments)
def _collector(args: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415

    from .app import create_app, open_collector_store  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = CollectorSettings.from_env()  # every setting has an environment variable; flags win
    settings.store, settings.host, settings.port = args.store, args.host, args.port
    settings.api_key_header, settings.max_queued_spans = args.api_key_header, args.max_queued_spans
    settings.ack_timeout, settings.purge_interval = args.ack_timeout, args.purge_interval
    store = open_collector_store(settings.store)
    with store.connect() as con:
        open_mode = not key_store.any_keys(con, include_revoked=True)
    if open_mode and not _is_loopback(settings.host):
        print(f"traceduck collector: no API key exists in {settings.store}, so anyone could read and "
              f"write; serving on {LOOPBACK} only instead of {settings.host}. Create a key with "
              f"`traceduck keys create --store {settings.store} --project NAME` to serve on other "
              "addresses.", file=sys.stderr)  # fmt: skip
        settings.host = LOOPBACK
    elif open_mode:
        print("traceduck collector: no API key exists, so the service is open to callers on this "
              "machine (loopback only).", file=sys.stderr)  # fmt: skip
    print(f"traceduck collector: store {settings.store}, listening on http://{settings.host}:{settings.port}",
          file=sys.stderr)  # fmt: skip
    uvicorn.run(create_app(settings, store), host=settings.host, port=settings.port, log_level="warning")
    return 0


def _keys_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a key (printed once)", description="create a key (printed once)")
    store_argument(create)
    create.add_argument("--project", required=True, help="project (application) the key belongs to")
    create.add_argument("--rights", default="read,write", help="comma list of read, write, admin (default read,write)")
    create.add_argument("--description", default=None, help="a note to recognise the key by")
    revoke = sub.add_parser("revoke", help="revoke a key by its id", description="revoke a key by its id")
    store_argument(revoke)
    revoke.add_argument("key_id", help="the key id (the part after td_ in the key)")
    listing = sub.add_parser("list", help="list keys (ids, projects, rights; never the keys)",
                             description="list keys (ids, projects, rights; never the keys)")  # fmt: skip
    store_argument(listing)


@command("keys", "create, revoke or list the collector's API keys (stored hashed)", _keys_arguments)
def _keys(args: argparse.Namespace) -> int:
    store = DuckDBStore(args.store)
    with store.connect(write=True) as con:
        if args.action == "create":
            info, key = key_store.create_key(con, args.project, key_store.parse_rights(args.rights), args.description)
            audit.append(con, audit.cli_actor(), audit.KEY_CREATED, info.project, info.key_id, None,
                         {"rights": sorted(info.rights), "description": info.description})  # fmt: skip
            print(key)
            print(f"key id {info.key_id}, project {info.project}, rights {','.join(sorted(info.rights))}. "
                  "Store the key now: it is not shown again.", file=sys.stderr)  # fmt: skip
        elif args.action == "revoke":
            info = key_store.revoke(con, args.key_id)
            if info is None:
                print(f"no active key {args.key_id}", file=sys.stderr)
                return 1
            audit.append(con, audit.cli_actor(), audit.KEY_REVOKED, info.project, info.key_id,
                         {"rights": sorted(info.rights), "description": info.description}, {"revoked": True})  # fmt: skip
            print(f"revoked key {info.key_id} of project {info.project}")
        else:
            for info in key_store.list_keys(con):
                state = "revoked" if info.revoked_at else "active"
                print(f"{info.key_id}  {info.project}  {','.join(sorted(info.rights))}  {state}  {info.description or ''}")
    return 0
