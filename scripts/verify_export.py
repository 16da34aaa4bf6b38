"""Check a tenant's export archive: python3 verify_export.py ARCHIVE.tar.gz [ANCHOR]"""

import hashlib
import json
import sys
import tarfile

with tarfile.open(sys.argv[1], "r:gz") as tar:
    files = {member.name: tar.extractfile(member).read() for member in tar.getmembers()}
manifest = json.loads(files.pop("manifest.json"))
for name, body in files.items():
    if hashlib.sha256(body).hexdigest() != manifest["files"][name]["sha256"]:
        sys.exit(f"{name} is not the file the manifest describes")
prev = sys.argv[2] if len(sys.argv) > 2 else "0" * 64  # the anchor, if the log was pruned
for number, line in enumerate(files["audit_events.ndjson"].splitlines(), 1):
    event = json.loads(line)
    values = {name: value for name, value in event.items() if name not in ("prev_hash", "hash")}
    canonical = json.dumps(values, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digest = hashlib.sha256(canonical.encode() + prev.encode()).hexdigest()
    if event["prev_hash"] != prev or event["hash"] != digest:
        sys.exit(f"audit_events.ndjson breaks at line {number}: event {event['id']}")
    prev = event["hash"]
print(f"intact: {len(files)} files as the manifest says, audit chain head {prev}")
