//! The data member of a raft snapshot, `state.bin`, checked as it streams.
//!
//! Vault's and OpenBao's raft FSM writes its snapshot as a sequence of
//! length-delimited protobuf `StorageEntry` messages: a varint length, then
//! the message, whose first field is the entry's key (field 1, a string) and
//! whose second is the barrier-encrypted value. Keys are plaintext paths
//! (`core/keyring`, `logical/…`), values are not. [`StateCheck`] decides only
//! "is this a sequence of storage entries of an initialized barrier": every
//! entry has a text key, the stream ends on an entry boundary, and one entry
//! is `core/keyring`, which every initialized barrier has. It holds one key at
//! a time, never a value, so its memory is bounded by the longest key.
//!
//! Why it exists: a forced restore (what `recover` uses) accepted an archive
//! whose members matched `SHA256SUMS` but whose `state.bin` was garbage, and
//! left a cluster that could never be unsealed again.

/// The longest key accepted; storage paths are far shorter.
const MAX_KEY: u64 = 8 * 1024;

/// The largest single entry accepted (raft's own limit is far lower).
const MAX_ENTRY: u64 = 1 << 30;

/// The entry every initialized barrier holds.
const KEYRING: &[u8] = b"core/keyring";

#[derive(Debug)]
enum Stage {
    /// Reading an entry's varint length (the value so far, its shift).
    Length(u64, u32),
    /// Expecting the key's tag.
    Tag,
    /// Reading the key's varint length.
    KeyLength(u64, u32),
    /// Reading the key; this many bytes of it are still to come.
    Key(u64),
    /// Skipping the rest of the entry (the encrypted value).
    Rest,
}

/// A streaming check of `state.bin`; feed every byte, then [`Self::finish`].
#[derive(Debug)]
pub struct StateCheck {
    stage: Stage,
    /// Bytes of the current entry not read yet.
    entry_left: u64,
    key: Vec<u8>,
    entries: u64,
    keyring: bool,
}

impl Default for StateCheck {
    fn default() -> Self {
        StateCheck {
            stage: Stage::Length(0, 0),
            entry_left: 0,
            key: Vec::new(),
            entries: 0,
            keyring: false,
        }
    }
}

/// One more byte of a varint.
enum Varint {
    /// Not finished: the value so far and the next byte's shift.
    More(u64, u32),
    Done(u64),
}

fn varint(value: u64, shift: u32, byte: u8) -> Result<Varint, &'static str> {
    if shift > 56 {
        return Err("a length runs past its ten bytes");
    }
    let value = value | u64::from(byte & 0x7f) << shift;
    Ok(if byte & 0x80 == 0 {
        Varint::Done(value)
    } else {
        Varint::More(value, shift + 7)
    })
}

impl StateCheck {
    /// Takes the next bytes of `state.bin`. The error says, without any of
    /// the data, why these are not storage entries.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), &'static str> {
        let mut i = 0;
        while i < bytes.len() {
            match self.stage {
                Stage::Length(value, shift) => {
                    let byte = bytes[i];
                    i += 1;
                    match varint(value, shift, byte)? {
                        Varint::More(v, s) => self.stage = Stage::Length(v, s),
                        Varint::Done(0) => return Err("an entry is empty"),
                        Varint::Done(v) if v > MAX_ENTRY => return Err("an entry is too large"),
                        Varint::Done(v) => {
                            self.entry_left = v;
                            self.stage = Stage::Tag;
                        }
                    }
                }
                Stage::Tag => {
                    let byte = bytes[i];
                    i += 1;
                    self.entry_left -= 1;
                    if byte != 0x0a {
                        return Err("an entry does not start with its key");
                    }
                    self.stage = Stage::KeyLength(0, 0);
                }
                Stage::KeyLength(value, shift) => {
                    let byte = bytes[i];
                    i += 1;
                    self.entry_left = self
                        .entry_left
                        .checked_sub(1)
                        .ok_or("an entry is shorter than its key")?;
                    match varint(value, shift, byte)? {
                        Varint::More(v, s) => self.stage = Stage::KeyLength(v, s),
                        Varint::Done(0) => return Err("an entry has an empty key"),
                        Varint::Done(v) if v > MAX_KEY || v > self.entry_left => {
                            return Err("an entry's key is longer than the entry")
                        }
                        Varint::Done(v) => {
                            self.key.clear();
                            self.stage = Stage::Key(v);
                        }
                    }
                }
                Stage::Key(left) => {
                    let take = left.min((bytes.len() - i) as u64);
                    let end = i + take as usize;
                    self.key.extend_from_slice(&bytes[i..end]);
                    i = end;
                    self.entry_left -= take;
                    if take < left {
                        self.stage = Stage::Key(left - take);
                        continue;
                    }
                    if std::str::from_utf8(&self.key).is_err() {
                        return Err("an entry's key is not text");
                    }
                    self.keyring |= self.key == KEYRING;
                    self.entries += 1;
                    self.stage = if self.entry_left == 0 {
                        Stage::Length(0, 0)
                    } else {
                        Stage::Rest
                    };
                }
                Stage::Rest => {
                    let take = self.entry_left.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.entry_left -= take;
                    if self.entry_left == 0 {
                        self.stage = Stage::Length(0, 0);
                    }
                }
            }
        }
        Ok(())
    }

    /// After the last byte: the stream ended between entries, held some, and
    /// one of them is the barrier's keyring.
    pub fn finish(&self) -> Result<(), &'static str> {
        if !matches!(self.stage, Stage::Length(0, 0)) {
            return Err("it ends inside an entry");
        }
        if self.entries == 0 {
            return Err("it holds no entries");
        }
        if !self.keyring {
            return Err("it holds no core/keyring entry, which every initialized barrier has");
        }
        Ok(())
    }
}

/// `entries` as the raft FSM writes them: delimited (key, value) messages.
#[cfg(test)]
pub(crate) fn state_bin(entries: &[(&str, &[u8])]) -> Vec<u8> {
    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let mut out = Vec::new();
    for (key, value) in entries {
        let mut msg = vec![0x0a];
        put_varint(&mut msg, key.len() as u64);
        msg.extend_from_slice(key.as_bytes());
        msg.push(0x12);
        put_varint(&mut msg, value.len() as u64);
        msg.extend_from_slice(value);
        put_varint(&mut out, msg.len() as u64);
        out.extend_from_slice(&msg);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bytes: &[u8], chunk: usize) -> Result<(), &'static str> {
        let mut c = StateCheck::default();
        for part in bytes.chunks(chunk.max(1)) {
            c.feed(part)?;
        }
        c.finish()
    }

    #[test]
    fn storage_entries_with_a_keyring_pass_in_any_chunking() {
        let big = vec![9u8; 300];
        let good = state_bin(&[
            ("core/audit", b"\x00\x01"),
            ("core/keyring", &big),
            ("logical/abc/def", b""),
        ]);
        for chunk in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(check(&good, chunk), Ok(()), "chunk {chunk}");
        }
    }

    #[test]
    fn garbage_truncation_and_a_barrier_without_keyring_are_refused() {
        assert!(check(&[7u8; 8192], 512).is_err());
        let mut random = vec![0u8; 65536];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut random);
        assert!(check(&random, 4096).is_err());
        let good = state_bin(&[("core/keyring", b"k"), ("core/master", b"m")]);
        assert_eq!(
            check(&good[..good.len() - 1], 64),
            Err("it ends inside an entry")
        );
        assert_eq!(check(b"", 64), Err("it holds no entries"));
        let no_keyring = state_bin(&[("core/audit", b"a")]);
        assert!(check(&no_keyring, 64).unwrap_err().contains("core/keyring"));
        let bad_key = {
            let mut b = state_bin(&[("core/keyring", b"k")]);
            b[3] = 0xff;
            b
        };
        assert_eq!(check(&bad_key, 64), Err("an entry's key is not text"));
    }
}
