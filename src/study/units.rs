//! The study's folder as a store of units: each unit of work is one JSON file, written to a
//! temporary name and renamed into place, so a file that exists is complete and a run killed at
//! any moment leaves only whole units behind. A rerun skips the units that exist.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{Error, Result};

/// Test hook: `HEADSCOPE_STUDY_ABORT_AFTER=N` makes the process stop with an error right after
/// its N-th unit is written (the kill-and-resume test).
pub const ABORT_AFTER_ENV: &str = "HEADSCOPE_STUDY_ABORT_AFTER";

/// Test hook: `HEADSCOPE_STUDY_UNIT_DELAY_MS=N` waits N ms before each unit, so a scheduler
/// test can kill a shard while it is in the middle of its units.
pub const UNIT_DELAY_ENV: &str = "HEADSCOPE_STUDY_UNIT_DELAY_MS";

/// Waits as [`UNIT_DELAY_ENV`] asks (not at all unless it is set).
pub fn test_delay() {
    if let Some(ms) = std::env::var(UNIT_DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
}

static WRITTEN: AtomicUsize = AtomicUsize::new(0);

/// The study's folder.
#[derive(Clone, Debug)]
pub struct UnitStore {
    root: PathBuf,
}

impl UnitStore {
    pub fn new(root: impl Into<PathBuf>) -> UnitStore {
        UnitStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn exists(&self, rel: &str) -> bool {
        self.path(rel).is_file()
    }

    /// Whether a unit is done: present and readable as `T`. A truncated or otherwise corrupt file
    /// (a disk filled up, a copy cut short) is [`UnitState::Corrupt`]: it is reported and
    /// recomputed, never merged.
    pub fn state<T: DeserializeOwned>(&self, rel: &str) -> UnitState<T> {
        let path = self.path(rel);
        match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => UnitState::Missing,
            Err(e) => UnitState::Corrupt(e.to_string()),
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(v) => UnitState::Done(v),
                Err(e) => UnitState::Corrupt(e.to_string()),
            },
        }
    }

    /// [`UnitStore::state`] as a yes/no: done and readable.
    pub fn done<T: DeserializeOwned>(&self, rel: &str) -> bool {
        matches!(self.state::<T>(rel), UnitState::Done(_))
    }

    pub fn read<T: DeserializeOwned>(&self, rel: &str) -> Result<T> {
        let path = self.path(rel);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::Study(format!(
                "{} is not a valid unit ({e}); delete it and rerun to recompute it",
                path.display()
            ))
        })
    }

    /// Writes a unit atomically (pretty JSON with a final newline) and counts it for the abort
    /// hook.
    pub fn write<T: Serialize>(&self, rel: &str, value: &T) -> Result<()> {
        self.write_text(rel, &pretty(value)?)?;
        let n = WRITTEN.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(limit) = std::env::var(ABORT_AFTER_ENV)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            if n >= limit {
                return Err(Error::Study(format!(
                    "aborted after {n} units ({ABORT_AFTER_ENV}={limit})"
                )));
            }
        }
        Ok(())
    }

    /// Writes any file atomically: a temporary file in the same folder, flushed, then renamed.
    pub fn write_text(&self, rel: &str, text: &str) -> Result<()> {
        write_atomic(&self.path(rel), text.as_bytes())
    }

    /// The files directly inside `rel` whose names end with `.json`, sorted by name.
    pub fn list_json(&self, rel: &str) -> Result<Vec<String>> {
        let dir = self.path(rel);
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))? {
            let entry = entry.map_err(|e| Error::io(&dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }
}

/// A unit file as found on disk.
#[derive(Debug)]
pub enum UnitState<T> {
    Missing,
    Done(T),
    /// Present but unreadable as its unit type; the parser's reason.
    Corrupt(String),
}

/// Pretty JSON with a final newline: how every file of a study's folder is written.
pub fn pretty<T: Serialize>(value: &T) -> Result<String> {
    let mut s = serde_json::to_string_pretty(value)
        .map_err(|e| Error::Study(format!("cannot serialise: {e}")))?;
    s.push('\n');
    Ok(s)
}

/// Writes `bytes` to `path` through a temporary sibling and a rename (atomic on one filesystem).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// SHA-256 of a file (FIPS 180-4), streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.hex())
}

/// SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    h.hex()
}

/// A small streaming SHA-256 (one dependency fewer for one digest per model).
struct Sha256 {
    state: [u32; 8],
    block: [u8; 64],
    filled: usize,
    length: u64,
}

const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
];

impl Sha256 {
    fn new() -> Sha256 {
        Sha256 {
            state: [
                0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
                0x5be0cd19,
            ],
            block: [0; 64],
            filled: 0,
            length: 0,
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.length += bytes.len() as u64;
        while !bytes.is_empty() {
            let take = (64 - self.filled).min(bytes.len());
            self.block[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == 64 {
                let block = self.block;
                self.compress(&block);
                self.filled = 0;
            }
        }
    }

    fn compress(&mut self, block: &[u8; 64]) {
        let mut w = [0u32; 64];
        for (i, c) in block.chunks_exact(4).enumerate() {
            w[i] = u32::from_be_bytes([c[0], c[1], c[2], c[3]]);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let [mut a, mut b, mut c, mut d, mut e, mut f, mut g, mut h] = self.state;
        for i in 0..64 {
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = h
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            h = g;
            g = f;
            f = e;
            e = d.wrapping_add(t1);
            d = c;
            c = b;
            b = a;
            a = t1.wrapping_add(t2);
        }
        for (s, v) in self.state.iter_mut().zip([a, b, c, d, e, f, g, h]) {
            *s = s.wrapping_add(v);
        }
    }

    fn hex(mut self) -> String {
        let bits = self.length.wrapping_mul(8);
        self.update(&[0x80]);
        while self.filled != 56 {
            self.update(&[0]);
        }
        self.update(&bits.to_be_bytes());
        self.state.iter().map(|w| format!("{w:08x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_the_standard_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Two blocks (FIPS 180-4's 448-bit message).
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
        let million = vec![b'a'; 1_000_000];
        assert_eq!(
            sha256_hex(&million),
            "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0"
        );
    }

    #[test]
    fn units_are_written_whole_and_listed_in_order() {
        let dir = std::env::temp_dir().join(format!("headscope-units-{}", std::process::id()));
        let store = UnitStore::new(&dir);
        store.write_text("a/2.json", "{}\n").unwrap();
        store.write_text("a/1.json", "[1]\n").unwrap();
        assert_eq!(store.list_json("a").unwrap(), vec!["1.json", "2.json"]);
        let v: Vec<u8> = store.read("a/1.json").unwrap();
        assert_eq!(v, vec![1]);
        assert!(store.list_json("missing").unwrap().is_empty());
        let bad = store.path("a/bad.json");
        std::fs::write(&bad, "{").unwrap();
        let err = store.read::<Vec<u8>>("a/bad.json").unwrap_err().to_string();
        assert!(err.contains("not a valid unit"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
