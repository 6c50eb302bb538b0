"""Writes TUF repositories with python-tuf's Metadata API, for imaged's interop tests
(tests/e2e/interop.rs): every key type, a delegation with `?` and `*` patterns, a root rotation
from ed25519 to ECDSA keys, a threshold of 2 with mixed key types, and tampered versions.

    python_repo.py OUT KEYTYPE     KEYTYPE: ed25519 | ecdsa | rsa | mixed

Writes, under OUT, whole consistent-snapshot repositories (`metadata/`, `targets/`):
  v1/        root 1, targets, a delegated role `files`, snapshot, timestamp (version 1)
  v2/        v1 plus root 2 (rotated: its root keys are ECDSA, signed by the old and new),
             and new targets, snapshot and timestamp versions (2) with a second target
  badsig/    v2's successor (version 3) whose targets signature is broken
  dupkey/    version 3 whose snapshot's signatures list one key id twice
  expired/   version 3 whose timestamp expired
  rollback/  version 1's timestamp again, served after version 2
  rollback-snapshot/  a timestamp of version 3 naming snapshot version 1
  rollback-targets/   timestamp and snapshot of version 3, the snapshot naming targets version 1
and `expect.json`: the targets each version lists, with their content's sha256.
"""

import copy
import hashlib
import json
import os
import shutil
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

FAR = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(days=365)
PAST = datetime(2020, 1, 1, tzinfo=timezone.utc)


def signer(keytype):
    return {
        "ed25519": CryptoSigner.generate_ed25519,
        "ecdsa": CryptoSigner.generate_ecdsa,
        "rsa": CryptoSigner.generate_rsa,
    }[keytype]()


class Repo:
    """A repository in memory: signers per role, metadata per role, target contents."""

    def __init__(self, keytype):
        types = ["ed25519", "ecdsa", "rsa"] if keytype == "mixed" else [keytype] * 3
        # Root: three keys (of every type when mixed), threshold 2.
        self.root_signers = [signer(t) for t in types]
        self.signers = {
            "targets": [signer(types[1])],
            "snapshot": [signer(types[2])],
            "timestamp": [signer(types[0])],
            "files": [signer(types[1])],
        }
        root = Root(expires=FAR, consistent_snapshot=True)
        for s in self.root_signers:
            root.add_key(s.public_key, "root")
        root.roles["root"].threshold = 2
        for role in ["targets", "snapshot", "timestamp"]:
            for s in self.signers[role]:
                root.add_key(s.public_key, role)
        self.roots = [Metadata(root)]
        # Signed by two of the three root keys (two types when mixed).
        for s in self.root_signers[1:]:
            self.roots[0].sign(s, append=True)
        self.contents = {}
        self.targets = Metadata(Targets(expires=FAR))
        files = DelegatedRole(
            name="files",
            keyids=[s.public_key.keyid for s in self.signers["files"]],
            threshold=1,
            terminating=True,
            paths=["files/v?/*.txt", "files/all/*"],
        )
        self.targets.signed.delegations = Delegations(
            keys={s.public_key.keyid: s.public_key for s in self.signers["files"]}, roles={"files": files}
        )
        self.files = Metadata(Targets(expires=FAR))
        self.snapshot = Metadata(Snapshot(expires=FAR))
        self.timestamp = Metadata(Timestamp(expires=FAR))
        self.add_target(self.targets, "images/demo/1", b"generation one\n")
        self.add_target(self.files, "files/v1/readme.txt", b"delegated with ? and *\n")

    def add_target(self, md, path, data):
        md.signed.targets[path] = TargetFile.from_data(path, data, ["sha256"])
        self.contents[path] = data

    def rotate_root(self):
        """Root 2: the root keys become ECDSA keys; signed by the old threshold and the new."""
        new = copy.deepcopy(self.roots[-1].signed)
        new.version += 1
        for keyid in list(new.roles["root"].keyids):
            new.revoke_key(keyid, "root")
        new_signers = [signer("ecdsa") for _ in range(3)]
        for s in new_signers:
            new.add_key(s.public_key, "root")
        md = Metadata(new)
        for s in self.root_signers[1:] + new_signers[:2]:
            md.sign(s, append=True)
        self.roots.append(md)
        self.root_signers = new_signers

    def bump(self):
        """A new version of targets, files, snapshot and timestamp, signed."""
        for md in (self.targets, self.files, self.snapshot, self.timestamp):
            md.signed.version += 1
        self.sign_all()

    def sign_all(self):
        self.sign(self.targets, "targets")
        self.sign(self.files, "files")
        snap = self.snapshot.signed
        snap.meta["targets.json"] = MetaFile(version=self.targets.signed.version)
        snap.meta["files.json"] = MetaFile(version=self.files.signed.version)
        self.sign(self.snapshot, "snapshot")
        ts = self.timestamp.signed
        ts.snapshot_meta = MetaFile(version=snap.version)
        self.sign(self.timestamp, "timestamp")

    def sign(self, md, role):
        md.signatures.clear()
        for s in self.signers[role]:
            md.sign(s, append=True)

    def write(self, out, mutate=None):
        """The whole repository under `out` (consistent snapshot names); `mutate(name, dict)`
        may change a file's JSON before it is written."""
        meta_dir, targets_dir = os.path.join(out, "metadata"), os.path.join(out, "targets")
        os.makedirs(meta_dir, exist_ok=True)
        ser = JSONSerializer(compact=False)

        def put(name, md):
            data = json.loads(md.to_bytes(ser))
            if mutate:
                mutate(name, data)
            with open(os.path.join(meta_dir, name), "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)

        for root in self.roots:
            put(f"{root.signed.version}.root.json", root)
        put("timestamp.json", self.timestamp)
        put(f"{self.snapshot.signed.version}.snapshot.json", self.snapshot)
        put(f"{self.targets.signed.version}.targets.json", self.targets)
        put(f"{self.files.signed.version}.{parse.quote('files', safe='')}.json", self.files)
        for path, data in self.contents.items():
            digest = hashlib.sha256(data).hexdigest()
            d, base = os.path.split(path)
            os.makedirs(os.path.join(targets_dir, d), exist_ok=True)
            with open(os.path.join(targets_dir, d, f"{digest}.{base}"), "wb") as f:
                f.write(data)


def main():
    out, keytype = sys.argv[1], sys.argv[2]
    shutil.rmtree(out, ignore_errors=True)
    repo = Repo(keytype)
    repo.sign_all()
    repo.write(os.path.join(out, "v1"))
    with open(os.path.join(out, "v1", "metadata", "root.json"), "wb") as f:
        f.write(repo.roots[0].to_bytes(JSONSerializer(compact=False)))
    v1_timestamp = copy.deepcopy(repo.timestamp)
    expect = {"v1": {p: hashlib.sha256(d).hexdigest() for p, d in repo.contents.items()}}

    repo.rotate_root()
    repo.add_target(repo.targets, "images/demo/2", b"generation two\n")
    repo.add_target(repo.files, "files/all/notes", b"a second delegated file\n")
    repo.bump()
    repo.write(os.path.join(out, "v2"))
    expect["v2"] = {p: hashlib.sha256(d).hexdigest() for p, d in repo.contents.items()}

    # Version 3 candidates, each wrong in one way.
    repo.add_target(repo.targets, "images/demo/3", b"generation three\n")
    repo.bump()

    def broken_sig(name, data):
        if name.endswith(".targets.json"):
            sig = data["signatures"][0]["sig"]
            data["signatures"][0]["sig"] = sig[:-1] + ("0" if sig[-1] != "0" else "1")

    def dup_key(name, data):
        if name.endswith(".snapshot.json"):
            data["signatures"].append(dict(data["signatures"][0]))

    repo.write(os.path.join(out, "badsig"), broken_sig)
    repo.write(os.path.join(out, "dupkey"), dup_key)
    repo.timestamp.signed.expires = PAST
    repo.sign(repo.timestamp, "timestamp")
    repo.write(os.path.join(out, "expired"))
    # The rolled-back timestamp: version 1's, validly signed, served after version 2.
    os.makedirs(os.path.join(out, "rollback", "metadata"), exist_ok=True)
    with open(os.path.join(out, "rollback", "metadata", "timestamp.json"), "wb") as f:
        f.write(v1_timestamp.to_bytes(JSONSerializer(compact=False)))
    # Version 3's timestamp, naming snapshot version 1.
    repo.timestamp.signed.expires = FAR
    repo.timestamp.signed.snapshot_meta = MetaFile(version=1)
    repo.sign(repo.timestamp, "timestamp")
    os.makedirs(os.path.join(out, "rollback-snapshot", "metadata"), exist_ok=True)
    with open(os.path.join(out, "rollback-snapshot", "metadata", "timestamp.json"), "wb") as f:
        f.write(repo.timestamp.to_bytes(JSONSerializer(compact=False)))
    # Version 3's snapshot naming targets version 1, and a timestamp naming it.
    repo.snapshot.signed.meta["targets.json"] = MetaFile(version=1)
    repo.sign(repo.snapshot, "snapshot")
    repo.timestamp.signed.snapshot_meta = MetaFile(version=repo.snapshot.signed.version)
    repo.sign(repo.timestamp, "timestamp")
    os.makedirs(os.path.join(out, "rollback-targets", "metadata"), exist_ok=True)
    for name, md in [("timestamp.json", repo.timestamp), (f"{repo.snapshot.signed.version}.snapshot.json", repo.snapshot)]:
        with open(os.path.join(out, "rollback-targets", "metadata", name), "wb") as f:
            f.write(md.to_bytes(JSONSerializer(compact=False)))
    with open(os.path.join(out, "expect.json"), "w") as f:
        json.dump(expect, f, indent=1, sort_keys=True)


if __name__ == "__main__":
    main()
