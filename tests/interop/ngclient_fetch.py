"""python-tuf's reference client (`tuf.ngclient.Updater`) against a repository (imaged's, in
tests/e2e/interop.rs): trusts ROOT, refreshes, finds TARGET through the delegations and
downloads it into TARGET_DIR. Prints what it got as JSON; exits 1 on any failure.

    ngclient_fetch.py METADATA_DIR ROOT METADATA_URL TARGETS_URL TARGET_DIR TARGET
"""

import hashlib
import json
import os
import shutil
import sys

from tuf.ngclient import Updater


def main():
    metadata_dir, root, metadata_url, targets_url, target_dir, target = sys.argv[1:7]
    os.makedirs(metadata_dir, exist_ok=True)
    os.makedirs(target_dir, exist_ok=True)
    shutil.copy(root, os.path.join(metadata_dir, "root.json"))
    updater = Updater(metadata_dir, metadata_url, target_dir, targets_url)
    updater.refresh()
    info = updater.get_targetinfo(target)
    if info is None:
        print(f"no target {target}", file=sys.stderr)
        sys.exit(1)
    path = updater.download_target(info)
    with open(path, "rb") as f:
        data = f.read()
    print(json.dumps({"path": path, "length": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                      "trusted_root_version": updater._trusted_set.root.version}))


if __name__ == "__main__":
    main()
