"""Signs an imaged repository's targets with python-tuf's Metadata API (tests/e2e/interop.rs):
given the target entries of the server's `images/FAMILY` and `channels` roles, writes a whole
consistent-snapshot repository with imaged's role layout (targets delegating `channels` and
`images/FAMILY`, the family's paths given with `?` and `*`), so that imgfs can mount a
generation whose metadata python-tuf wrote.

    python_imaged_repo.py OUT MODE ENTRIES.json [LATER.json]
    MODE: ed25519 | ecdsa | rsa   every key of that type
          rotated                 root 1's keys ed25519; root 2 (signed by old and new) rotates
                                  every top-level role to ECDSA keys
          mixed                   root: ed25519, ECDSA and RSA keys, threshold 2; every other
                                  role two keys of different types, threshold 2
    ENTRIES.json: {"family": "os", "images": {PATH: TARGETFILE}, "channels": {PATH: TARGETFILE}}

Writes OUT/metadata/ (root.json is root 1, what the endpoint is provisioned with). With
LATER.json (entries after the channel moved to another generation), also writes one
directory of metadata files per later version, served in this order after the first:
  good/                every role at version 2, ENTRIES again: an update to accept
  badsig/              version 3, LATER's entries, one signature of targets broken
  dupkey/              version 4, snapshot's signatures list one key id twice
  expired/             version 5, the timestamp expired
  rollback-timestamp/  the timestamp of version 1 again
  rollback-snapshot/   a timestamp of version 6 naming snapshot version 1
  rollback-targets/    timestamp and snapshot of version 7, the snapshot naming targets version 1
"""

import copy
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
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)
GENERATE = {"ed25519": CryptoSigner.generate_ed25519, "ecdsa": CryptoSigner.generate_ecdsa, "rsa": CryptoSigner.generate_rsa}
TOP = ["root", "targets", "snapshot", "timestamp"]


def key_types(mode, role):
    """The key types of `role`'s keys (their number is the list's length)."""
    if mode == "mixed":
        return {"root": ["ed25519", "ecdsa", "rsa"], "targets": ["ecdsa", "rsa"], "snapshot": ["rsa", "ed25519"]}.get(
            role, ["ed25519", "ecdsa"]
        )
    return ["ed25519" if mode == "rotated" else mode]


class Repo:
    def __init__(self, mode, entries):
        self.family_role = f"images/{entries['family']}"
        self.delegated_roles = ["channels", self.family_role]
        self.signers = {r: [GENERATE[t]() for t in key_types(mode, r)] for r in TOP + self.delegated_roles}
        self.threshold = 2 if mode == "mixed" else 1
        self.root = Root(expires=FAR, consistent_snapshot=True)
        for role in TOP:
            for s in self.signers[role]:
                self.root.add_key(s.public_key, role)
            self.root.roles[role].threshold = self.threshold
        self.roots = [self.sign_md(self.root, "root")]
        if mode == "rotated":
            self.rotate_root()
        self.targets = Targets(expires=FAR)
        family = entries["family"]
        # The family's paths with `?` and `*`: `images/o?/*` matches `images/os/1`.
        family_paths = [f"images/{family[:-1]}?/*"]
        channel_paths = ["/".join(["channels"] + ["*"] * n) for n in range(1, 9)]
        roles = {}
        for name, paths in [("channels", channel_paths), (self.family_role, family_paths)]:
            keyids = [s.public_key.keyid for s in self.signers[name]]
            roles[name] = DelegatedRole(name, keyids, self.threshold, True, paths)
        keys = {s.public_key.keyid: s.public_key for r in self.delegated_roles for s in self.signers[r]}
        self.targets.delegations = Delegations(keys=keys, roles=roles)
        self.delegated = {r: Targets(expires=FAR) for r in self.delegated_roles}
        self.snapshot = Snapshot(expires=FAR)
        self.timestamp = Timestamp(expires=FAR)
        self.set_entries(entries)

    def rotate_root(self):
        """Root 2: every top-level role's keys become ECDSA keys; signed by the old root keys
        and the new."""
        old_root_signers = self.signers["root"]
        new = copy.deepcopy(self.root)
        new.version += 1
        for role in TOP:
            for keyid in list(new.roles[role].keyids):
                new.revoke_key(keyid, role)
            self.signers[role] = [GENERATE["ecdsa"]()]
            new.add_key(self.signers[role][0].public_key, role)
        md = Metadata(new)
        for s in old_root_signers + self.signers["root"]:
            md.sign(s, append=True)
        self.root = new
        self.roots.append(md)

    def set_entries(self, entries):
        for role, key in [("channels", "channels"), (self.family_role, "images")]:
            self.delegated[role].targets = {p: TargetFile.from_dict(dict(e), p) for p, e in entries[key].items()}

    def sign_md(self, signed, role):
        md = Metadata(signed)
        for s in self.signers[role]:
            md.sign(s, append=True)
        return md

    def at_version(self, version):
        """Every role but root at `version`, the snapshot and timestamp naming them."""
        for signed in [self.targets, self.snapshot, self.timestamp, *self.delegated.values()]:
            signed.version = version
        self.snapshot.meta = {"targets.json": MetaFile(version=version)}
        for role in self.delegated:
            self.snapshot.meta[f"{role}.json"] = MetaFile(version=version)
        self.timestamp.snapshot_meta = MetaFile(version=version)

    def files(self):
        """Metadata file name -> signed Metadata, every role but root."""
        out = {
            "timestamp.json": self.sign_md(self.timestamp, "timestamp"),
            f"{self.snapshot.version}.snapshot.json": self.sign_md(self.snapshot, "snapshot"),
            f"{self.targets.version}.targets.json": self.sign_md(self.targets, "targets"),
        }
        for role, t in self.delegated.items():
            out[f"{t.version}.{parse.quote(role, safe='')}.json"] = self.sign_md(t, role)
        return out


def write(out, files, mutate=None):
    """Writes `files` (name -> Metadata) under `out`; `mutate(name, dict)` may change a file's
    JSON after it was signed."""
    os.makedirs(out, exist_ok=True)
    ser = JSONSerializer(compact=False)
    for name, md in files.items():
        data = md.to_bytes(ser)
        if mutate:
            doc = json.loads(data)
            mutate(name, doc)
            data = json.dumps(doc, indent=1, sort_keys=True).encode()
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


def main():
    out, mode, entries_file = sys.argv[1:4]
    later_file = sys.argv[4] if len(sys.argv) > 4 else None
    with open(entries_file) as f:
        entries = json.load(f)
    repo = Repo(mode, entries)
    ser = JSONSerializer(compact=False)
    meta_dir = os.path.join(out, "metadata")
    os.makedirs(meta_dir, exist_ok=True)
    with open(os.path.join(meta_dir, "root.json"), "wb") as f:
        f.write(repo.roots[0].to_bytes(ser))
    write(meta_dir, {f"{md.signed.version}.root.json": md for md in repo.roots})
    repo.at_version(1)
    first = repo.files()
    write(meta_dir, first)
    # Bytes now: the Metadata objects share the signed parts later versions change.
    first_timestamp = first["timestamp.json"].to_bytes(ser)
    if not later_file:
        return
    with open(later_file) as f:
        later = json.load(f)

    repo.at_version(2)
    write(os.path.join(out, "good"), repo.files())

    repo.set_entries(later)
    repo.at_version(3)

    def broken_sig(name, doc):
        if name.endswith(".targets.json"):
            sig = doc["signatures"][0]["sig"]
            doc["signatures"][0]["sig"] = sig[:-1] + ("0" if sig[-1] != "0" else "1")

    write(os.path.join(out, "badsig"), repo.files(), broken_sig)

    repo.at_version(4)

    def dup_key(name, doc):
        if name.endswith(".snapshot.json"):
            doc["signatures"].append(dict(doc["signatures"][0]))

    write(os.path.join(out, "dupkey"), repo.files(), dup_key)

    repo.at_version(5)
    repo.timestamp.expires = PAST
    write(os.path.join(out, "expired"), {"timestamp.json": repo.sign_md(repo.timestamp, "timestamp")})
    repo.timestamp.expires = FAR

    os.makedirs(os.path.join(out, "rollback-timestamp"), exist_ok=True)
    with open(os.path.join(out, "rollback-timestamp", "timestamp.json"), "wb") as f:
        f.write(first_timestamp)

    repo.at_version(6)
    repo.timestamp.snapshot_meta = MetaFile(version=1)
    write(os.path.join(out, "rollback-snapshot"), {"timestamp.json": repo.sign_md(repo.timestamp, "timestamp")})

    repo.at_version(7)
    repo.snapshot.meta["targets.json"] = MetaFile(version=1)
    files = repo.files()
    write(os.path.join(out, "rollback-targets"), {n: md for n, md in files.items() if n in ("timestamp.json", "7.snapshot.json")})


if __name__ == "__main__":
    main()
