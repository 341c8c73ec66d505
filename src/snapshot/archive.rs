//! The raft snapshot format, checked here before anything is restored.
//!
//! An OpenBao/Vault raft snapshot is a gzip stream holding a tar archive with
//! `meta.json` (the raft index and term), `state.bin` (the data) and
//! `SHA256SUMS` (one `<hex>  <name>` line per member); OpenBao adds
//! `SHA256SUMS.sealed`, the sums encrypted with the barrier, which only the
//! server can open and check. [`inspect`] reads it
//! once, as a stream, in bounded memory: the gzip header and CRC, the tar
//! structure, the three members, each member against `SHA256SUMS`, and
//! `state.bin` as a sequence of storage entries ([`crate::snapshot::state`]).
//!
//! It decides only "is this a raft snapshot"; whether it is *the* snapshot
//! its manifest describes (sha256, size) is `location`'s check.

use crate::snapshot::state::StateCheck;
use crate::snapshot::stream::hex;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;

/// The members every raft snapshot holds.
pub const MEMBERS: [&str; 3] = ["meta.json", "state.bin", "SHA256SUMS"];

/// The server's own, encrypted copy of `SHA256SUMS`: not listed in it.
const SEALED_SUMS: &str = "SHA256SUMS.sealed";

/// `SHA256SUMS` and `meta.json` are small; a bigger one is not a snapshot's.
const SMALL_MEMBER_MAX: u64 = 64 * 1024;

/// Why the bytes are not a raft snapshot. Names members, never contents.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ArchiveError {
    #[error("it does not start with a gzip header")]
    NotGzip,
    #[error("its gzip or tar structure is damaged ({0})")]
    Damaged(String),
    #[error("it has no {0} member")]
    Missing(&'static str),
    #[error("its {0} member is larger than a snapshot's")]
    Oversized(String),
    #[error("its SHA256SUMS is not a list of `<sha256>  <name>` lines")]
    BadSums,
    #[error("its meta.json is not raft snapshot metadata (a JSON object with Index and Term)")]
    BadMeta,
    #[error("its member {0} does not match SHA256SUMS")]
    MemberMismatch(String),
    #[error("its state.bin is not raft storage entries: {0}")]
    BadState(&'static str),
}

/// What a valid archive holds: each member's sha256, and how big the data
/// is once unpacked (what a server that restores it writes to disk).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub sha256: BTreeMap<String, String>,
    /// The bytes of `state.bin`, as read.
    pub state_bytes: u64,
}

/// Reads `reader` as a raft snapshot archive; see the module docs. Stops at
/// the first problem; on success every byte of the gzip stream was read.
pub fn inspect(mut reader: impl Read) -> Result<Members, ArchiveError> {
    let mut head = [0u8; 3];
    reader
        .read_exact(&mut head)
        .map_err(|_| ArchiveError::NotGzip)?;
    if head != [0x1f, 0x8b, 0x08] {
        return Err(ArchiveError::NotGzip);
    }
    let damaged = |e: std::io::Error| ArchiveError::Damaged(e.to_string());
    let gz = flate2::read::GzDecoder::new(std::io::Cursor::new(head).chain(&mut reader));
    let mut archive = tar::Archive::new(gz);
    let mut members = Members::default();
    let mut sums: Option<String> = None;
    let mut buf = vec![0u8; 64 * 1024];
    for entry in archive.entries().map_err(damaged)? {
        let mut entry = entry.map_err(damaged)?;
        let name = entry
            .path()
            .map_err(damaged)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if name == SEALED_SUMS {
            let n = std::io::copy(
                &mut (&mut entry).take(SMALL_MEMBER_MAX + 1),
                &mut std::io::sink(),
            )
            .map_err(damaged)?;
            if n > SMALL_MEMBER_MAX {
                return Err(ArchiveError::Oversized(name));
            }
            continue;
        }
        if name == "meta.json" {
            let mut text = Vec::new();
            (&mut entry)
                .take(SMALL_MEMBER_MAX + 1)
                .read_to_end(&mut text)
                .map_err(damaged)?;
            if text.len() as u64 > SMALL_MEMBER_MAX {
                return Err(ArchiveError::Oversized(name));
            }
            check_meta(&text)?;
            members.sha256.insert(name, hex(&Sha256::digest(&text)));
            continue;
        }
        if name == "SHA256SUMS" {
            let mut text = String::new();
            (&mut entry)
                .take(SMALL_MEMBER_MAX + 1)
                .read_to_string(&mut text)
                .map_err(|_| ArchiveError::BadSums)?;
            if text.len() as u64 > SMALL_MEMBER_MAX {
                return Err(ArchiveError::Oversized(name));
            }
            sums = Some(text);
            continue;
        }
        let mut hasher = Sha256::new();
        let mut state = (name == "state.bin").then(StateCheck::default);
        loop {
            let n = entry.read(&mut buf).map_err(damaged)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            if let Some(state) = state.as_mut() {
                state.feed(&buf[..n]).map_err(ArchiveError::BadState)?;
                members.state_bytes += n as u64;
            }
        }
        if let Some(state) = state {
            state.finish().map_err(ArchiveError::BadState)?;
        }
        members.sha256.insert(name, hex(&hasher.finalize()));
    }
    // The rest of the gzip stream: padding, and the trailer whose CRC and
    // length the decoder checks.
    let mut gz = archive.into_inner();
    std::io::copy(&mut gz, &mut std::io::sink()).map_err(damaged)?;
    let sums = sums.ok_or(ArchiveError::Missing("SHA256SUMS"))?;
    let mut listed = BTreeMap::new();
    for line in sums.lines().filter(|l| !l.trim().is_empty()) {
        let (sum, name) = line
            .split_once(char::is_whitespace)
            .ok_or(ArchiveError::BadSums)?;
        let name = name.trim_start().trim_start_matches('*');
        if sum.len() != 64 || !sum.bytes().all(|b| b.is_ascii_hexdigit()) || name.is_empty() {
            return Err(ArchiveError::BadSums);
        }
        listed.insert(name.to_owned(), sum.to_ascii_lowercase());
    }
    for required in MEMBERS.iter().filter(|m| **m != "SHA256SUMS") {
        if !members.sha256.contains_key(*required) {
            return Err(ArchiveError::Missing(required));
        }
    }
    for (name, sum) in &members.sha256 {
        if listed.get(name) != Some(sum) {
            return Err(ArchiveError::MemberMismatch(name.clone()));
        }
    }
    for name in listed.keys() {
        if !members.sha256.contains_key(name) {
            return Err(ArchiveError::MemberMismatch(name.clone()));
        }
    }
    Ok(members)
}

/// `meta.json` is raft's snapshot metadata: a JSON object whose `Index` and
/// `Term` are numbers.
fn check_meta(text: &[u8]) -> Result<(), ArchiveError> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Meta {
        #[allow(dead_code)]
        index: u64,
        #[allow(dead_code)]
        term: u64,
    }
    serde_json::from_slice::<Meta>(text)
        .map(drop)
        .map_err(|_| ArchiveError::BadMeta)
}

/// A well-formed snapshot archive holding `members`, with a matching
/// `SHA256SUMS` unless `sums` overrides it. For tests.
#[cfg(test)]
pub(crate) fn build(members: &[(&str, &[u8])], sums: Option<&str>) -> Vec<u8> {
    let mut listing = String::new();
    for (name, data) in members {
        listing.push_str(&format!("{}  {name}\n", hex(&Sha256::digest(data))));
    }
    let sums = sums.map_or(listing, str::to_owned);
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let all = members
        .iter()
        .copied()
        .chain(std::iter::once(("SHA256SUMS", sums.as_bytes())));
    for (name, data) in all {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, name, data).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &[u8] = br#"{"Version":1,"ID":"2-7-1","Index":7,"Term":2}"#;

    fn state() -> Vec<u8> {
        crate::snapshot::state::state_bin(&[
            ("core/keyring", &[9u8; 50_000]),
            ("core/master", b"m"),
        ])
    }

    fn good() -> Vec<u8> {
        build(&[("meta.json", META), ("state.bin", &state())], None)
    }

    #[test]
    fn a_well_formed_snapshot_passes() {
        let m = inspect(&good()[..]).unwrap();
        assert_eq!(m.sha256.len(), 2);
        // The unpacked data's size, which the restore-test's room check uses.
        assert_eq!(m.state_bytes, state().len() as u64);
        assert!(
            m.state_bytes > good().len() as u64,
            "the archive compresses it"
        );
        // As OpenBao writes them: with the sealed copy of the sums.
        let state = state();
        let sums = format!(
            "{}  meta.json\n{}  state.bin\n",
            hex(&Sha256::digest(META)),
            hex(&Sha256::digest(&state))
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        {
            let mut tar = tar::Builder::new(&mut gz);
            for (name, data) in [
                ("meta.json", META),
                ("state.bin", &state[..]),
                ("SHA256SUMS", sums.as_bytes()),
                ("SHA256SUMS.sealed", &b"opaque"[..]),
            ] {
                let mut header = tar::Header::new_gnu();
                header.set_size(data.len() as u64);
                header.set_cksum();
                tar.append_data(&mut header, name, data).unwrap();
            }
            tar.finish().unwrap();
        }
        assert!(inspect(&gz.finish().unwrap()[..]).is_ok());
    }

    #[test]
    fn random_bytes_and_gzip_that_is_not_a_snapshot_are_refused() {
        let random: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(inspect(&random[..]), Err(ArchiveError::NotGzip));
        assert_eq!(inspect(&b""[..]), Err(ArchiveError::NotGzip));
        let mut fake_header = vec![0x1f, 0x8b, 0x08];
        fake_header.extend_from_slice(&random);
        assert!(matches!(
            inspect(&fake_header[..]),
            Err(ArchiveError::Damaged(_))
        ));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &[0u8; 2048]).unwrap();
        let empty_tar = gz.finish().unwrap();
        assert_eq!(
            inspect(&empty_tar[..]),
            Err(ArchiveError::Missing("SHA256SUMS"))
        );
    }

    #[test]
    fn members_must_match_their_sums() {
        let no_state = build(&[("meta.json", META)], None);
        assert_eq!(
            inspect(&no_state[..]),
            Err(ArchiveError::Missing("state.bin"))
        );
        let wrong = format!(
            "{}  meta.json\n{}  state.bin\n",
            "0".repeat(64),
            "1".repeat(64)
        );
        let lying = build(
            &[("meta.json", META), ("state.bin", &state())],
            Some(&wrong),
        );
        assert_eq!(
            inspect(&lying[..]),
            Err(ArchiveError::MemberMismatch("meta.json".into()))
        );
        let garbage = build(
            &[("meta.json", META), ("state.bin", &state())],
            Some("nonsense"),
        );
        assert_eq!(inspect(&garbage[..]), Err(ArchiveError::BadSums));
        let no_meta = build(&[("meta.json", b"{}"), ("state.bin", &state())], None);
        assert_eq!(inspect(&no_meta[..]), Err(ArchiveError::BadMeta));
    }

    /// Members that match SHA256SUMS around a state.bin that is not storage
    /// entries: a forced restore accepted such an archive and left a
    /// cluster no key could unseal.
    #[test]
    fn a_state_bin_that_is_not_storage_entries_is_refused() {
        let constant = build(&[("meta.json", META), ("state.bin", &[7u8; 8192])], None);
        assert!(matches!(
            inspect(&constant[..]),
            Err(ArchiveError::BadState(_))
        ));
        let foreign = crate::snapshot::state::state_bin(&[("some/key", b"v")]);
        let foreign = build(&[("meta.json", META), ("state.bin", &foreign)], None);
        assert!(matches!(
            inspect(&foreign[..]),
            Err(ArchiveError::BadState(_))
        ));
    }

    #[test]
    fn a_damaged_byte_in_the_stream_is_caught() {
        let mut bytes = good();
        let at = bytes.len() - 6;
        bytes[at] ^= 0xff; // inside the gzip trailer's CRC or length
        assert!(matches!(inspect(&bytes[..]), Err(ArchiveError::Damaged(_))));
    }
}
