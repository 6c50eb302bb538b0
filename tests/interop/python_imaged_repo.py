"""Signs an imaged repository's targets with python-tuf's Metadata API (tests/e2e/interop.rs):
given the target entries of the server's `images/FAMILY` and `channels` roles, writes a whole
consistent-snapshot repository with imaged's role layout (targets delegating `channels` and
`images/FAMILY`), every key of KEYTYPE, so that imgfs can mount a generation whose metadata
python-tuf wrote.

    python_imaged_repo.py OUT KEYTYPE ENTRIES.json
    ENTRIES.json: {"family": "os", "images": {PATH: TARGETFILE}, "channels": {PATH: TARGETFILE}}
"""

import json
import os
import sys
from datetime import datetime, timedelta, timezone
from urllib import parse

from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer

FAR = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=30)
GENERATE = {"ed25519": CryptoSigner.generate_ed25519, "ecdsa": CryptoSigner.generate_ecdsa, "rsa": CryptoSigner.generate_rsa}


def main():
    out, keytype, entries_file = sys.argv[1:4]
    with open(entries_file) as f:
        entries = json.load(f)
    family = entries["family"]
    family_role = f"images/{family}"
    signers = {r: GENERATE[keytype]() for r in ["root", "targets", "snapshot", "timestamp", "channels", family_role]}
    root = Root(expires=FAR, consistent_snapshot=True)
    for role in ["root", "targets", "snapshot", "timestamp"]:
        root.add_key(signers[role].public_key, role)
    targets = Targets(expires=FAR)
    channel_paths = ["/".join(["channels"] + ["*"] * n) for n in range(1, 9)]
    roles = {
        "channels": DelegatedRole("channels", [signers["channels"].public_key.keyid], 1, True, channel_paths),
        family_role: DelegatedRole(family_role, [signers[family_role].public_key.keyid], 1, True, [f"{family_role}/*"]),
    }
    keys = {signers[r].public_key.keyid: signers[r].public_key for r in roles}
    targets.delegations = Delegations(keys=keys, roles=roles)
    delegated = {}
    for role, key in [("channels", "channels"), (family_role, "images")]:
        t = Targets(expires=FAR)
        for path, entry in entries[key].items():
            t.targets[path] = TargetFile.from_dict(dict(entry), path)
        delegated[role] = t
    snapshot = Snapshot(expires=FAR)
    snapshot.meta["targets.json"] = MetaFile(version=1)
    for role in delegated:
        snapshot.meta[f"{role}.json"] = MetaFile(version=1)
    timestamp = Timestamp(expires=FAR)
    timestamp.snapshot_meta = MetaFile(version=1)

    meta_dir = os.path.join(out, "metadata")
    os.makedirs(meta_dir, exist_ok=True)
    ser = JSONSerializer(compact=False)

    def put(name, signed, role):
        md = Metadata(signed)
        md.sign(signers[role])
        data = md.to_bytes(ser)
        with open(os.path.join(meta_dir, name), "wb") as f:
            f.write(data)
        return data

    put("root.json", root, "root")
    put("1.root.json", root, "root")
    put("1.targets.json", targets, "targets")
    for role, t in delegated.items():
        put(f"1.{parse.quote(role, safe='')}.json", t, role)
    put("1.snapshot.json", snapshot, "snapshot")
    put("timestamp.json", timestamp, "timestamp")


if __name__ == "__main__":
    main()
