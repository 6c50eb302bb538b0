//! TUF keys as python-tuf and securesystemslib write them, key ids, signing, and the threshold
//! check over a metadata file's signatures.
//!
//! Key types and schemes: `ed25519`/`ed25519` (public key: 64 hex digits), `ecdsa`/
//! `ecdsa-sha2-nistp256` (also the legacy key type `ecdsa-sha2-nistp256`; public key: PEM
//! SubjectPublicKeyInfo; signatures: hex of DER `(r, s)` over SHA-256), `rsa`/
//! `rsassa-pss-sha256` (PSS with MGF1-SHA-256 and a 32-byte salt; a maximum-length salt is
//! accepted too) and `rsa`/`rsa-pkcs1v15-sha256` (public key: PEM SubjectPublicKeyInfo). A key
//! object keeps every field it was given (`keyid_hash_algorithms`, `x-...`), so metadata that
//! lists it again says exactly what its author wrote. A key id is the sha256 of the canonical
//! JSON of the key's `keytype`, `scheme` and `keyval` (securesystemslib's default); ids read
//! from metadata are names, not checked against it, as python-tuf does (real roots carry ids
//! computed other ways).

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{RandomizedSigner, SignatureEncoding, Signer, Verifier};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use crate::canonical;

/// A key id: lowercase hex of the sha256 of the key's canonical JSON.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct KeyId(pub String);

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A key type or scheme this implementation does not verify.
    #[error(
        "unsupported key type {keytype:?} / scheme {scheme:?} (supported: ed25519/ed25519, ecdsa/ecdsa-sha2-nistp256, \
         rsa/rsassa-pss-sha256, rsa/rsa-pkcs1v15-sha256)"
    )]
    Unsupported {
        /// The key type given.
        keytype: String,
        /// The scheme given.
        scheme: String,
    },
    /// The key material does not parse as its type says.
    #[error("malformed {keytype} key: {why}")]
    Malformed {
        /// The key type.
        keytype: String,
        /// What is wrong.
        why: String,
    },
}

fn malformed(keytype: &str, why: impl fmt::Display) -> KeyError {
    KeyError::Malformed { keytype: keytype.to_string(), why: why.to_string() }
}

/// A key type `imgctl key generate` makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// ed25519 (the default).
    Ed25519,
    /// ECDSA on P-256, scheme `ecdsa-sha2-nistp256`.
    Ecdsa,
    /// RSA 3072, scheme `rsassa-pss-sha256`.
    Rsa,
}

impl std::str::FromStr for KeyType {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<KeyType, KeyError> {
        match s {
            "ed25519" => Ok(KeyType::Ed25519),
            "ecdsa" => Ok(KeyType::Ecdsa),
            "rsa" => Ok(KeyType::Rsa),
            _ => Err(KeyError::Unsupported { keytype: s.to_string(), scheme: String::new() }),
        }
    }
}

/// The RSA signature schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RsaScheme {
    Pss,
    Pkcs1v15,
}

impl RsaScheme {
    fn name(self) -> &'static str {
        match self {
            RsaScheme::Pss => "rsassa-pss-sha256",
            RsaScheme::Pkcs1v15 => "rsa-pkcs1v15-sha256",
        }
    }
}

/// The key material of a public key.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verifying {
    Ed25519(ed25519_dalek::VerifyingKey),
    Ecdsa(p256::ecdsa::VerifyingKey),
    Rsa(Box<rsa::RsaPublicKey>, RsaScheme),
}

/// A public key that can check signatures, with the key object it was read from.
#[derive(Debug, Clone)]
pub struct PublicKey {
    key: Verifying,
    object: Value,
}

/// Two keys are the same key when their material and scheme are, whatever else their objects
/// carry.
impl PartialEq for PublicKey {
    fn eq(&self, other: &PublicKey) -> bool {
        self.key == other.key
    }
}

impl Eq for PublicKey {}

impl PublicKey {
    /// Reads a key object from metadata or a key file.
    pub fn from_value(v: &Value) -> Result<PublicKey, KeyError> {
        let (keytype, scheme) = (v["keytype"].as_str().unwrap_or(""), v["scheme"].as_str().unwrap_or(""));
        let public = v["keyval"]["public"].as_str().unwrap_or("");
        let key = match (keytype, scheme) {
            ("ed25519", "ed25519") => {
                let bytes: [u8; 32] = hex::decode(public)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| malformed(keytype, format!("{public:?} is not 64 hex digits")))?;
                Verifying::Ed25519(ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| malformed(keytype, e))?)
            }
            ("ecdsa" | "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp256") => {
                Verifying::Ecdsa(p256::ecdsa::VerifyingKey::from_public_key_pem(public).map_err(|e| malformed(keytype, pem_error(e)))?)
            }
            ("rsa", "rsassa-pss-sha256" | "rsa-pkcs1v15-sha256") => {
                let k = rsa::RsaPublicKey::from_public_key_pem(public).map_err(|e| malformed(keytype, pem_error(e)))?;
                Verifying::Rsa(Box::new(k), if scheme == "rsassa-pss-sha256" { RsaScheme::Pss } else { RsaScheme::Pkcs1v15 })
            }
            _ => return Err(KeyError::Unsupported { keytype: keytype.into(), scheme: scheme.into() }),
        };
        let mut object = v.clone();
        if let Some(keyval) = object.get_mut("keyval").and_then(Value::as_object_mut) {
            // A key file's private half never travels with the public key.
            keyval.remove("private");
        }
        Ok(PublicKey { key, object })
    }

    /// The ed25519 key with these 32 public bytes (an endpoint's key), if they are one.
    pub fn from_raw(bytes: &[u8; 32]) -> Option<PublicKey> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes).ok().map(|k| PublicKey::of(Verifying::Ed25519(k)))
    }

    /// The key object this implementation writes for `key`.
    fn of(key: Verifying) -> PublicKey {
        let (keytype, scheme, public) = match &key {
            Verifying::Ed25519(k) => ("ed25519", "ed25519", hex::encode(k.as_bytes())),
            Verifying::Ecdsa(k) => ("ecdsa", "ecdsa-sha2-nistp256", k.to_public_key_pem(LineEnding::LF).expect("a P-256 key encodes")),
            Verifying::Rsa(k, scheme) => ("rsa", scheme.name(), k.to_public_key_pem(LineEnding::LF).expect("an RSA key encodes")),
        };
        PublicKey { key, object: json!({"keytype": keytype, "scheme": scheme, "keyval": {"public": public}}) }
    }

    /// The key object as metadata lists it (every field it was read with).
    pub fn to_value(&self) -> Value {
        self.object.clone()
    }

    /// The key's id: sha256 of the canonical JSON of its `keytype`, `scheme` and `keyval`.
    pub fn key_id(&self) -> KeyId {
        let o = &self.object;
        let core = json!({"keytype": o["keytype"], "scheme": o["scheme"], "keyval": o["keyval"]});
        let bytes = canonical::encode(&core).expect("a key object has no floats");
        KeyId(hex::encode(Sha256::digest(bytes)))
    }

    /// The key type as metadata names it (`ed25519`, `ecdsa`, `rsa`).
    pub fn keytype(&self) -> &str {
        self.object["keytype"].as_str().unwrap_or("")
    }

    /// Whether `sig_hex` is this key's signature of `message`.
    pub fn verifies(&self, message: &[u8], sig_hex: &str) -> bool {
        let Ok(sig) = hex::decode(sig_hex) else { return false };
        match &self.key {
            Verifying::Ed25519(k) => {
                <[u8; 64]>::try_from(sig).is_ok_and(|b| k.verify(message, &ed25519_dalek::Signature::from_bytes(&b)).is_ok())
            }
            Verifying::Ecdsa(k) => p256::ecdsa::Signature::from_der(&sig).is_ok_and(|s| k.verify(message, &s).is_ok()),
            Verifying::Rsa(k, RsaScheme::Pss) => {
                let Ok(s) = rsa::pss::Signature::try_from(sig.as_slice()) else { return false };
                // The digest's length is what securesystemslib signs with; the maximum length
                // is what it did for a while (and what it verifies still).
                let max_salt = (rsa::traits::PublicKeyParts::size(k.as_ref())).saturating_sub(32 + 2);
                rsa::pss::VerifyingKey::<Sha256>::new(k.as_ref().clone()).verify(message, &s).is_ok()
                    || rsa::pss::VerifyingKey::<Sha256>::new_with_salt_len(k.as_ref().clone(), max_salt).verify(message, &s).is_ok()
            }
            Verifying::Rsa(k, RsaScheme::Pkcs1v15) => {
                let Ok(s) = rsa::pkcs1v15::Signature::try_from(sig.as_slice()) else { return false };
                rsa::pkcs1v15::VerifyingKey::<Sha256>::new(k.as_ref().clone()).verify(message, &s).is_ok()
            }
        }
    }

    /// The 32 bytes of an ed25519 key (an endpoint's identity); None for other types.
    pub fn ed25519_bytes(&self) -> Option<&[u8; 32]> {
        match &self.key {
            Verifying::Ed25519(k) => Some(k.as_bytes()),
            _ => None,
        }
    }

    /// The key's identity for counting signatures: its type and material (the same key listed
    /// under two ids, or with other extra fields, is one key).
    pub fn fingerprint(&self) -> Vec<u8> {
        match &self.key {
            Verifying::Ed25519(k) => [b"ed25519:".as_slice(), k.as_bytes()].concat(),
            Verifying::Ecdsa(k) => [b"ecdsa:".as_slice(), k.to_public_key_der().expect("encodes").as_bytes()].concat(),
            Verifying::Rsa(k, _) => [b"rsa:".as_slice(), k.to_public_key_der().expect("encodes").as_bytes()].concat(),
        }
    }
}

/// What a PEM or DER decoder said, in words.
fn pem_error(e: impl fmt::Display) -> String {
    format!("not a PEM SubjectPublicKeyInfo of that type ({e})")
}

/// The key material of a private key.
enum Signing {
    Ed25519(ed25519_dalek::SigningKey),
    Ecdsa(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>, RsaScheme),
}

/// A private key: it signs.
pub struct SecretKey {
    key: Signing,
    public: PublicKey,
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SecretKey").field(&self.public.key_id()).finish()
    }
}

impl SecretKey {
    /// A new ed25519 key from `rng`.
    pub fn generate(rng: &mut (impl rand_core_06::CryptoRng + rand_core_06::RngCore)) -> SecretKey {
        SecretKey::generate_type(KeyType::Ed25519, rng)
    }

    /// A new key of type `t` from `rng` (RSA: 3072 bits, `rsassa-pss-sha256`).
    pub fn generate_type(t: KeyType, rng: &mut (impl rand_core_06::CryptoRng + rand_core_06::RngCore)) -> SecretKey {
        match t {
            KeyType::Ed25519 => SecretKey::of(Signing::Ed25519(ed25519_dalek::SigningKey::generate(rng))),
            KeyType::Ecdsa => SecretKey::of(Signing::Ecdsa(p256::ecdsa::SigningKey::random(rng))),
            KeyType::Rsa => {
                let k = rsa::RsaPrivateKey::new(rng, 3072).expect("RSA key generation with a working RNG");
                SecretKey::of(Signing::Rsa(Box::new(k), RsaScheme::Pss))
            }
        }
    }

    /// The ed25519 key from its 32 secret bytes.
    pub fn from_bytes(bytes: &[u8; 32]) -> SecretKey {
        SecretKey::of(Signing::Ed25519(ed25519_dalek::SigningKey::from_bytes(bytes)))
    }

    fn of(key: Signing) -> SecretKey {
        let public = PublicKey::of(match &key {
            Signing::Ed25519(k) => Verifying::Ed25519(k.verifying_key()),
            Signing::Ecdsa(k) => Verifying::Ecdsa(*k.verifying_key()),
            Signing::Rsa(k, scheme) => Verifying::Rsa(Box::new(k.to_public_key()), *scheme),
        });
        SecretKey { key, public }
    }

    /// Its public half.
    pub fn public(&self) -> PublicKey {
        self.public.clone()
    }

    /// A signature of `message`, hex, as its scheme encodes it.
    pub fn sign(&self, message: &[u8]) -> String {
        match &self.key {
            Signing::Ed25519(k) => hex::encode(k.sign(message).to_bytes()),
            Signing::Ecdsa(k) => {
                let s: p256::ecdsa::Signature = k.sign(message);
                hex::encode(s.to_der().as_bytes())
            }
            Signing::Rsa(k, RsaScheme::Pss) => {
                let signer = rsa::pss::BlindedSigningKey::<Sha256>::new(k.as_ref().clone());
                hex::encode(signer.sign_with_rng(&mut rand_core_06::OsRng, message).to_vec())
            }
            Signing::Rsa(k, RsaScheme::Pkcs1v15) => {
                hex::encode(rsa::pkcs1v15::SigningKey::<Sha256>::new(k.as_ref().clone()).sign(message).to_vec())
            }
        }
    }

    /// The private half as a key file keeps it: 64 hex digits (ed25519), PEM PKCS #8 (others).
    fn private_text(&self) -> String {
        match &self.key {
            Signing::Ed25519(k) => hex::encode(k.to_bytes()),
            Signing::Ecdsa(k) => k.to_pkcs8_pem(LineEnding::LF).expect("a P-256 key encodes").to_string(),
            Signing::Rsa(k, _) => k.to_pkcs8_pem(LineEnding::LF).expect("an RSA key encodes").to_string(),
        }
    }
}

/// Why signatures did not meet a role's threshold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{role}: {valid} valid signature(s) from distinct authorised keys, {threshold} needed")]
pub struct ThresholdError {
    /// The role whose metadata was checked.
    pub role: String,
    /// Valid signatures counted.
    pub valid: usize,
    /// How many the role needs.
    pub threshold: usize,
}

/// Checks that `signatures` (key id, hex signature) over `message` include valid ones by at
/// least `threshold` distinct keys among `authorised`, looked up in `keys`. A key counts once
/// however often it signs or is listed under other ids; unknown keys and bad signatures are
/// ignored.
pub fn check_threshold(
    role: &str,
    message: &[u8],
    signatures: &[(KeyId, String)],
    keys: &BTreeMap<KeyId, PublicKey>,
    authorised: &[KeyId],
    threshold: usize,
) -> Result<(), ThresholdError> {
    let mut counted: HashSet<Vec<u8>> = HashSet::new();
    for (id, sig) in signatures {
        if !authorised.contains(id) {
            continue;
        }
        let Some(key) = keys.get(id) else { continue };
        let fingerprint = key.fingerprint();
        if counted.contains(&fingerprint) {
            continue;
        }
        if key.verifies(message, sig) {
            counted.insert(fingerprint);
        }
    }
    if threshold == 0 || counted.len() < threshold {
        return Err(ThresholdError { role: role.to_string(), valid: counted.len(), threshold });
    }
    Ok(())
}

/// A key file as the engineer keeps it: the key object with its private half,
/// `{"keytype", "scheme", "keyval": {"public", "private"}}` (securesystemslib's layout: hex
/// for ed25519, PEM for the others). A public key file is the same without `private`.
pub fn secret_to_file(k: &SecretKey) -> Vec<u8> {
    let mut v = k.public().to_value();
    v["keyval"]["private"] = Value::String(k.private_text());
    let mut out = serde_json::to_vec_pretty(&v).expect("a key object serialises");
    out.push(b'\n');
    out
}

/// A public key file (see `secret_to_file`).
pub fn public_to_file(k: &PublicKey) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(&k.to_value()).expect("a key object serialises");
    out.push(b'\n');
    out
}

/// Reads a secret key file; its public half must match its private half.
pub fn secret_from_file(bytes: &[u8]) -> Result<SecretKey, KeyError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| malformed("key file", format!("not a key file: {e}")))?;
    let public = PublicKey::from_value(&v)?;
    let keytype = public.keytype().to_string();
    let private = v["keyval"]["private"].as_str().ok_or_else(|| malformed(&keytype, "no private key in the file"))?;
    let key = match &public.key {
        Verifying::Ed25519(_) => {
            let bytes: [u8; 32] = hex::decode(private)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| malformed(&keytype, "the private key is not 32 bytes of hex"))?;
            Signing::Ed25519(ed25519_dalek::SigningKey::from_bytes(&bytes))
        }
        Verifying::Ecdsa(_) => Signing::Ecdsa(
            p256::ecdsa::SigningKey::from_pkcs8_pem(private).map_err(|e| malformed(&keytype, format!("the private key is not PEM PKCS #8 P-256: {e}")))?,
        ),
        Verifying::Rsa(_, scheme) => Signing::Rsa(
            Box::new(rsa::RsaPrivateKey::from_pkcs8_pem(private).map_err(|e| malformed(&keytype, format!("the private key is not PEM PKCS #8 RSA: {e}")))?),
            *scheme,
        ),
    };
    let mut k = SecretKey::of(key);
    if k.public != public {
        return Err(malformed(&keytype, "the private key does not match the public key in the file"));
    }
    // The file's own key object (with whatever else it carries) names the key.
    k.public = public;
    Ok(k)
}

/// Reads the public key of a public or secret key file.
pub fn public_from_file(bytes: &[u8]) -> Result<PublicKey, KeyError> {
    let v: Value = serde_json::from_slice(bytes).map_err(|e| malformed("key file", format!("not a key file: {e}")))?;
    PublicKey::from_value(&v)
}
