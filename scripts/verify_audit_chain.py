"""Check an audit export (NDJSON or CSV): python3 verify_audit_chain.py FILE [ANCHOR]"""

import csv
import hashlib
import json
import sys

NULLABLE = ("actor_id", "actor_app_id", "ip")  # in CSV an empty cell is null for these


def events(file, is_csv):
    if not is_csv:
        yield from (json.loads(line) for line in file if line.strip())
        return
    for row in csv.DictReader(file):
        row["changes"] = json.loads(row["changes"])
        yield {k: None if k in NULLABLE and v == "" else v for k, v in row.items()}


path, prev, count = sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "0" * 64, 0
with open(path, encoding="utf-8", newline="") as file:
    for count, event in enumerate(events(file, path.endswith(".csv")), 1):
        digest, link = event.pop("hash"), event.pop("prev_hash")
        body = json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        if link != prev or hashlib.sha256((body + link).encode()).hexdigest() != digest:
            sys.exit(f"broken at event {event['id']} (event {count} of the file)")
        prev = digest
print(f"valid: {count} events, head {prev}")
