//! An external signer for tests (`imgctl --signer`): a shell script around an ECDSA P-256 key
//! that only `openssl` touches, as a token's PKCS #11 tool would.

use std::path::Path;
use std::process::Command;

/// An external signer around an ECDSA key that only `openssl` touches (as a token's PKCS #11
/// tool would): prints the public key object, or signs standard input; counts its uses.
pub fn openssl_signer(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    let key = dir.join("root.pem");
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).output().unwrap();
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key.to_str().unwrap()]);
    run(&["pkey", "-in", key.to_str().unwrap(), "-pubout", "-out", dir.join("root.pub.pem").to_str().unwrap()]);
    let script = dir.join("signer.sh");
    let d = dir.display();
    std::fs::write(
        &script,
        format!(
            r#"#!/bin/sh
set -e
echo "$IMGCTL_SIGNER" >> {d}/uses
case "$IMGCTL_SIGNER" in
  public) printf '{{"keytype":"ecdsa","scheme":"ecdsa-sha2-nistp256","keyval":{{"public":"%s"}}}}' "$(awk '{{printf "%s\\n", $0}}' {d}/root.pub.pem)" ;;
  sign) openssl dgst -sha256 -sign {d}/root.pem | od -An -v -tx1 | tr -d ' \n' ;;
  *) exit 2 ;;
esac
"#
        ),
    )
    .unwrap();
    format!("sh {}", script.display())
}

/// The public key object `signer` prints, written to `file` (a `.pub` key file).
pub fn public_file(signer: &str, file: &Path) {
    let out = Command::new("sh").arg("-c").arg(signer).env("IMGCTL_SIGNER", "public").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::write(file, out.stdout).unwrap();
}
