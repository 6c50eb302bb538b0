//! The package list of a generation: every installed Debian package (name, version,
//! architecture, source package), read from `var/lib/dpkg/status` when the generation is
//! made and stored as one object the manifest names (extension `packages`), so "which
//! generations carry openssl below 3.0.15?" is answered without reading any tree. Layout in
//! `docs/format.md`.

use crate::codec::{DecodeError, Reader, Writer};

/// Manifest extension key: the digest of the package-list object.
pub const PACKAGES_EXTENSION: &str = "packages";
/// Where dpkg keeps its database of installed packages, relative to the root.
pub const DPKG_STATUS: &str = "var/lib/dpkg/status";

const MAGIC: &str = "IMGK";
const VERSION: u8 = 1;
const MAX_FIELD: usize = 4096;
const MAX_PACKAGES: u32 = 1 << 20;

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct Package {
    /// Binary package name (`libssl3`).
    pub name: String,
    /// Its version as dpkg writes it (`1:3.0.15-1~deb12u1`).
    pub version: String,
    /// `amd64`, `all`, ...
    pub arch: String,
    /// The source package it was built from (`openssl`); the name itself when dpkg records none.
    pub source: String,
}

/// Every installed package of a generation, sorted (by name, then version, architecture, source).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageList(pub Vec<Package>);

impl PackageList {
    /// Parses a dpkg status file; only packages whose status is `installed` count.
    /// Unparsable paragraphs are skipped: the list is an index, dpkg's file stays the truth.
    pub fn from_dpkg_status(text: &str) -> PackageList {
        let mut out = Vec::new();
        for para in text.split("\n\n") {
            let (mut name, mut version, mut arch, mut source, mut installed) = (None, None, None, None, false);
            for line in para.lines() {
                let Some((key, value)) = line.split_once(':') else { continue };
                let value = value.trim();
                match key {
                    "Package" => name = Some(value),
                    "Version" => version = Some(value),
                    "Architecture" => arch = Some(value),
                    // `Source: openssl` or `Source: openssl (3.0.15-1)` when versions differ.
                    "Source" => source = value.split_whitespace().next(),
                    "Status" => installed = value.ends_with(" installed"),
                    _ => {}
                }
            }
            if let (Some(name), Some(version), true) = (name, version, installed) {
                if [Some(name), Some(version), arch, source].iter().flatten().any(|f| f.len() > MAX_FIELD) {
                    continue;
                }
                out.push(Package {
                    name: name.to_string(),
                    version: version.to_string(),
                    arch: arch.unwrap_or("").to_string(),
                    source: source.unwrap_or(name).to_string(),
                });
            }
        }
        out.sort();
        out.dedup();
        PackageList(out)
    }

    /// The canonical bytes of the object.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(MAGIC.as_bytes());
        w.u8(VERSION);
        w.u32(self.0.len() as u32);
        for p in &self.0 {
            for field in [&p.name, &p.version, &p.arch, &p.source] {
                w.bytes16(field.as_bytes());
            }
        }
        w.buf
    }

    /// Parses the object.
    pub fn decode(bytes: &[u8]) -> Result<PackageList, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(MAGIC)?;
        match r.u8("package list version")? {
            VERSION => {}
            version => return Err(DecodeError::UnsupportedVersion { what: "package list", version }),
        }
        let n = r.u32("package count")?;
        if n > MAX_PACKAGES {
            return Err(DecodeError::Invalid { what: "package count", why: n.to_string() });
        }
        let mut field = |what: &'static str| -> Result<String, DecodeError> {
            let b = r.bytes16(what)?;
            if b.len() > MAX_FIELD {
                return Err(DecodeError::Invalid { what, why: format!("{} bytes", b.len()) });
            }
            String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid { what, why: "not UTF-8".into() })
        };
        let mut out = Vec::with_capacity(n.min(65536) as usize);
        for _ in 0..n {
            out.push(Package { name: field("package name")?, version: field("version")?, arch: field("architecture")?, source: field("source")? });
        }
        r.finish()?;
        Ok(PackageList(out))
    }

    /// The packages named `name` (one per architecture), or built from source package `name`
    /// when `by_source`.
    pub fn find<'a>(&'a self, name: &'a str, by_source: bool) -> impl Iterator<Item = &'a Package> + 'a {
        self.0.iter().filter(move |p| if by_source { p.source == name } else { p.name == name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Package: libssl3\nStatus: install ok installed\nArchitecture: amd64\nSource: openssl\nVersion: 3.0.15-1~deb12u1\n\n\
Package: less\nStatus: install ok installed\nArchitecture: amd64\nVersion: 590-2.1~deb12u2\n\n\
Package: gone\nStatus: deinstall ok config-files\nArchitecture: amd64\nVersion: 1\n\n\
Package: libfoo\nStatus: install ok installed\nArchitecture: i386\nSource: foo (2.0-1)\nVersion: 2.0-1+b1\n";

    #[test]
    fn installed_packages_with_their_sources_round_trip() {
        let list = PackageList::from_dpkg_status(STATUS);
        let names: Vec<(&str, &str)> = list.0.iter().map(|p| (p.name.as_str(), p.source.as_str())).collect();
        assert_eq!(names, [("less", "less"), ("libfoo", "foo"), ("libssl3", "openssl")]);
        assert_eq!(list.find("openssl", true).next().unwrap().version, "3.0.15-1~deb12u1");
        assert_eq!(list.find("libfoo", false).next().unwrap().arch, "i386");
        assert_eq!(PackageList::decode(&list.encode()).unwrap(), list);
    }

    #[test]
    fn a_damaged_list_is_an_error() {
        let bytes = PackageList::from_dpkg_status(STATUS).encode();
        assert!(matches!(PackageList::decode(&bytes[..bytes.len() - 1]), Err(DecodeError::Truncated { .. })));
        let mut bad = bytes.clone();
        bad[4] = 9;
        assert!(matches!(PackageList::decode(&bad), Err(DecodeError::UnsupportedVersion { .. })));
    }
}
