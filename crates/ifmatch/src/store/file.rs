//! `file://DIR`: the embedded default store, on local disk.
//!
//! Compare-and-swap holds across threads **and processes** sharing `DIR`:
//!
//! - **Per-key lock.** A write or delete takes an exclusive `flock` on one of
//!   256 lock files (`DIR/locks/NN`, chosen by a hash of the key), reads the
//!   current version, checks the condition, and only then writes. `flock`
//!   locks belong to open file descriptions, so two threads of one process
//!   exclude each other just like two processes do, and the kernel drops the
//!   lock if a process dies holding it.
//! - **Durable, never torn.** The new value goes to a temporary file in
//!   `DIR/tmp`, is fsynced, renamed over the key's file, and the directory is
//!   fsynced. A reader opens either the old file or the new one, never a
//!   half-written one, and a crash at any point leaves the old value or the
//!   new one. Readers take no lock.
//! - **No ABA.** A version is `GEN.INCARNATION`: a generation that counts the
//!   writes to the key, and a random 64-bit incarnation chosen when the key is
//!   created, so a key deleted and created again never repeats a version.
//!
//! Layout: `DIR/IFMATCH_STORE` (marks the directory as a store), `DIR/data/`
//! (values), `DIR/tmp/` (writes in flight), `DIR/locks/`. Each key segment is
//! percent-encoded (bytes outside `A-Z a-z 0-9 . _ -`, and non-ASCII), folders
//! get the suffix `.d` and values `.v`, so the keys `a` and `a/b` can both
//! exist. A segment whose encoding would be too long for a file name is
//! shortened and completed with a hash; the full key is always in the file's
//! header. Each value file holds a magic number, a JSON header (key, version,
//! size, metadata, expiry) and the body.
//!
//! Temporary files older than an hour (left by a crash) are removed on open.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Condition, Fetch, ListEntry, ListPage, ListResult, Metadata, Object, ObjectMeta, PutOptions,
    Store, Version, check_condition, page_sorted,
};
use crate::error::{Error, Result};
use crate::key::{validate_key, validate_metadata, validate_prefix};

const MAGIC: &[u8; 8] = b"IFMATCH1";
const MARKER: &str = "IFMATCH_STORE";
const LOCK_STRIPES: usize = 256;
const MAX_ENCODED_SEGMENT: usize = 200;
const MAX_HEADER: u32 = 1 << 20;
const STALE_TMP: Duration = Duration::from_secs(3600);

/// A store in a local directory; see the module docs.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    /// Tests only: make the next directory fsyncs fail.
    #[cfg(test)]
    fail_dir_sync: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Header {
    key: String,
    version: String,
    size: u64,
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    expires_at: Option<u64>,
}

impl Header {
    fn meta(self) -> ObjectMeta {
        ObjectMeta {
            key: self.key,
            version: Version::new(self.version),
            size: self.size,
            metadata: self.metadata,
            expires_at: self.expires_at,
        }
    }
}

impl FileStore {
    /// Opens (creating if needed) a store in `dir`.
    ///
    /// A directory that exists, is not empty and was not made by ifmatch is
    /// refused, so a mistyped path never scatters files into an unrelated folder.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore> {
        let root = dir.as_ref().to_path_buf();
        if root.as_os_str().is_empty() {
            return Err(Error::InvalidInput(
                "file:// needs a directory, e.g. file://./data".into(),
            ));
        }
        let io_err = |what: &str, e: io::Error| {
            Error::other(format!("file store {}: {what}", root.display()), e)
        };
        fs::create_dir_all(&root).map_err(|e| io_err("cannot create the directory", e))?;
        let marker = root.join(MARKER);
        if !marker.exists() {
            // Only our own names may be there: another process may be creating
            // the same store right now and have made some of them already.
            let entries = fs::read_dir(&root).map_err(|e| io_err("cannot read", e))?;
            for entry in entries {
                let entry = entry.map_err(|e| io_err("cannot read", e))?;
                let name = entry.file_name();
                if ![MARKER, "data", "tmp", "locks"].iter().any(|n| name == *n) {
                    return Err(Error::InvalidInput(format!(
                        "{} is not empty and is not an ifmatch store (no {MARKER} file); use an empty or new directory",
                        root.display()
                    )));
                }
            }
        }
        for sub in ["data", "tmp", "locks"] {
            fs::create_dir_all(root.join(sub)).map_err(|e| io_err("cannot create", e))?;
        }
        if !marker.exists() {
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
            {
                Ok(mut f) => {
                    f.write_all(b"ifmatch file store, format 1\n")
                        .and_then(|()| f.sync_all())
                        .map_err(|e| io_err("cannot write the marker", e))?;
                    fsync_dir(&root).map_err(|e| io_err("cannot sync", e))?;
                }
                // Another process created the store at the same moment.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("cannot write the marker", e)),
            }
        }
        let store = FileStore {
            root,
            #[cfg(test)]
            fail_dir_sync: Default::default(),
        };
        store.remove_stale_tmp();
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn remove_stale_tmp(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        let now = SystemTime::now();
        for e in entries.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age > STALE_TMP);
            if old {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    fn path_of(&self, key: &str) -> PathBuf {
        let mut p = self.root.join("data");
        let segments: Vec<&str> = key.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            let enc = encode_segment(seg);
            if i + 1 == segments.len() {
                p.push(format!("{enc}.v"));
            } else {
                p.push(format!("{enc}.d"));
            }
        }
        p
    }

    fn lock(&self, key: &str) -> Result<StripeLock> {
        let digest = Sha256::digest(key.as_bytes());
        let stripe = digest[0] as usize % LOCK_STRIPES;
        let path = self.root.join("locks").join(format!("{stripe:02x}"));
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| self.io("cannot open a lock file", e))?;
        loop {
            // SAFETY: flock on a valid, owned file descriptor.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(StripeLock { _file: file });
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(self.io("cannot lock", err));
            }
        }
    }

    fn io(&self, what: &str, e: io::Error) -> Error {
        Error::other(format!("file store {}: {what}", self.root.display()), e)
    }

    fn read_header(&self, key: &str) -> Result<Option<(Header, File)>> {
        let path = self.path_of(key);
        let mut file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
            Err(e) => return Err(self.io("cannot open a value", e)),
        };
        let header = read_header_from(&mut file).map_err(|e| self.corrupt(key, &path, e))?;
        if header.key != key {
            return Err(self.corrupt(
                key,
                &path,
                io::Error::other(format!("the file holds key {:?}", header.key)),
            ));
        }
        Ok(Some((header, file)))
    }

    fn corrupt(&self, key: &str, path: &Path, e: io::Error) -> Error {
        Error::other(
            format!(
                "file store: the value of key '{key}' at {} is unreadable or corrupt",
                path.display()
            ),
            e,
        )
    }

    fn get_blocking(&self, key: &str, known: Option<&Version>) -> Result<Option<Object>> {
        let Some((header, mut file)) = self.read_header(key)? else {
            return Err(Error::not_found(key));
        };
        if known.is_some_and(|k| k.as_str() == header.version) {
            return Ok(None);
        }
        let mut body = Vec::with_capacity(header.size as usize);
        file.read_to_end(&mut body)
            .map_err(|e| self.io("cannot read a value", e))?;
        if body.len() as u64 != header.size {
            let path = self.path_of(key);
            return Err(self.corrupt(
                key,
                &path,
                io::Error::other(format!(
                    "expected {} bytes of value, found {}",
                    header.size,
                    body.len()
                )),
            ));
        }
        Ok(Some(Object {
            meta: header.meta(),
            body: Bytes::from(body),
        }))
    }

    fn put_blocking(&self, key: &str, body: &[u8], opts: PutOptions) -> Result<Version> {
        let _lock = self.lock(key)?;
        let current = self.read_header(key)?.map(|(h, _)| h);
        let current_version = current.as_ref().map(|h| Version::new(h.version.clone()));
        check_condition(key, &opts.condition, current_version.as_ref())?;
        let version = match &current {
            Some(h) => next_version(&h.version),
            None => format!("1.{:016x}", rand::random::<u64>()),
        };
        let header = Header {
            key: key.to_string(),
            version: version.clone(),
            size: body.len() as u64,
            metadata: opts.metadata,
            expires_at: opts.expires_at,
        };
        let target = self.path_of(key);
        if let Some(parent) = target.parent() {
            self.ensure_dirs(parent)?;
        }
        let tmp = self
            .root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string());
        let written = (|| -> io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            let header_bytes = serde_json::to_vec(&header).map_err(io::Error::other)?;
            f.write_all(MAGIC)?;
            f.write_all(&(header_bytes.len() as u32).to_le_bytes())?;
            f.write_all(&header_bytes)?;
            f.write_all(body)?;
            f.sync_all()?;
            fs::rename(&tmp, &target)
        })();
        if let Err(e) = written {
            // Nothing is visible: the old value stands.
            let _ = fs::remove_file(&tmp);
            return Err(self.io("cannot write a value", e));
        }
        // The new value is visible from here on: a failure to make the
        // rename durable leaves the outcome unknown, not failed.
        if let Some(parent) = target.parent() {
            self.sync_dir(parent)
                .map_err(|e| self.after_commit(key, "the write", e))?;
        }
        Ok(Version::new(version))
    }

    /// An error after a change became visible (the directory fsync): the
    /// change may or may not survive a crash, so the outcome is unknown.
    fn after_commit(&self, key: &str, what: &str, e: io::Error) -> Error {
        Error::Ambiguous {
            key: key.to_string(),
            message: format!(
                "file store {}: {what} is visible but could not be made durable (directory fsync failed: {e})",
                self.root.display()
            ),
        }
    }

    /// Fsyncs a directory (tests can make it fail).
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        #[cfg(test)]
        if self.fail_dir_sync.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::other("injected fsync failure"));
        }
        fsync_dir(dir)
    }

    fn delete_blocking(&self, key: &str, condition: Condition) -> Result<()> {
        let _lock = self.lock(key)?;
        let current = self.read_header(key)?.map(|(h, _)| Version::new(h.version));
        check_condition(key, &condition, current.as_ref())?;
        if current.is_none() {
            return Ok(());
        }
        let path = self.path_of(key);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io("cannot delete a value", e)),
        }
        if let Some(parent) = path.parent() {
            self.sync_dir(parent)
                .map_err(|e| self.after_commit(key, "the delete", e))?;
        }
        Ok(())
    }

    /// Creates the folders down to `dir`, fsyncing each parent whose entries changed.
    fn ensure_dirs(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        if let Some(parent) = dir.parent() {
            self.ensure_dirs(parent)?;
        }
        match fs::create_dir(dir) {
            Ok(()) => {
                if let Some(parent) = dir.parent() {
                    fsync_dir(parent).map_err(|e| self.io("cannot sync", e))?;
                }
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(self.io("cannot create a folder", e)),
        }
    }

    fn list_blocking(&self, prefix: &str, page: &ListPage) -> Result<ListResult> {
        // Start from the deepest folder that every match must be in.
        let mut dir = self.root.join("data");
        if let Some((folders, _)) = prefix.rsplit_once('/') {
            for seg in folders.split('/') {
                dir.push(format!("{}.d", encode_segment(seg)));
            }
        }
        let mut all = Vec::new();
        let base = match prefix.rsplit_once('/') {
            Some((folders, _)) => format!("{folders}/"),
            None => String::new(),
        };
        self.walk(&dir, &base, prefix, &mut all)?;
        page_sorted(all, page)
    }

    fn walk(&self, dir: &Path, base: &str, prefix: &str, out: &mut Vec<ListEntry>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("cannot list", e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| self.io("cannot list", e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(enc) = name.strip_suffix(".d") {
                let Some(seg) = decode_segment(enc) else {
                    // A shortened (hashed) folder name: descend, keys come from headers.
                    self.walk_hashed(&entry.path(), prefix, out)?;
                    continue;
                };
                let sub = format!("{base}{seg}/");
                if sub.starts_with(prefix) || prefix.starts_with(&sub) {
                    self.walk(&entry.path(), &sub, prefix, out)?;
                }
            } else if let Some(enc) = name.strip_suffix(".v") {
                let key = match decode_segment(enc) {
                    Some(seg) => format!("{base}{seg}"),
                    None => match self.header_at(&entry.path()) {
                        Some(h) => h.key,
                        None => continue,
                    },
                };
                if !key.starts_with(prefix) {
                    continue;
                }
                if let Some(h) = self.header_at(&entry.path()) {
                    out.push(ListEntry {
                        key,
                        version: Version::new(h.version),
                        size: h.size,
                    });
                }
            }
        }
        Ok(())
    }

    fn walk_hashed(&self, dir: &Path, prefix: &str, out: &mut Vec<ListEntry>) -> Result<()> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.io("cannot list", e)),
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                self.walk_hashed(&path, prefix, out)?;
            } else if let Some(h) = self.header_at(&path)
                && h.key.starts_with(prefix)
            {
                out.push(ListEntry {
                    key: h.key,
                    version: Version::new(h.version),
                    size: h.size,
                });
            }
        }
        Ok(())
    }

    /// The header of a value file, or `None` if it vanished meanwhile or is unreadable.
    fn header_at(&self, path: &Path) -> Option<Header> {
        let mut f = File::open(path).ok()?;
        read_header_from(&mut f).ok()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(FileStore) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(this))
            .await
            .map_err(|e| Error::other("file store task failed", e))?
    }
}

struct StripeLock {
    _file: File,
}

fn read_header_from(file: &mut File) -> io::Result<Header> {
    let mut fixed = [0u8; 12];
    file.read_exact(&mut fixed)?;
    if &fixed[..8] != MAGIC {
        return Err(io::Error::other("not an ifmatch value file (bad magic)"));
    }
    let len = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
    if len > MAX_HEADER {
        return Err(io::Error::other("header too large"));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact(&mut buf)?;
    let header: Header = serde_json::from_slice(&buf).map_err(io::Error::other)?;
    // Leave the cursor at the body.
    file.seek(SeekFrom::Start(12 + len as u64))?;
    Ok(header)
}

fn next_version(current: &str) -> String {
    match current.split_once('.') {
        Some((gen_str, inc)) => match gen_str.parse::<u64>() {
            Ok(g) => format!("{}.{inc}", g + 1),
            Err(_) => format!("1.{:016x}", rand::random::<u64>()),
        },
        None => format!("1.{:016x}", rand::random::<u64>()),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn keep(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-'
}

/// Percent-encodes a key segment for use as a file name; shortens long ones with a hash.
fn encode_segment(seg: &str) -> String {
    let mut out = String::with_capacity(seg.len());
    for &b in seg.as_bytes() {
        if keep(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.len() > MAX_ENCODED_SEGMENT {
        let digest = Sha256::digest(seg.as_bytes());
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        let mut cut = 100;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        // '~' never appears in an encoded segment, so it marks a shortened one.
        out = format!("{}~{hex}", &out[..cut]);
    }
    out
}

/// Decodes a segment; `None` for a shortened (hashed) one or a name we did not make.
fn decode_segment(enc: &str) -> Option<String> {
    if enc.contains('~') {
        return None;
    }
    let bytes = enc.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = enc.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[async_trait]
impl Store for FileStore {
    fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    async fn get(&self, key: &str) -> Result<Object> {
        validate_key(key)?;
        let key = key.to_string();
        self.blocking(move |s| {
            s.get_blocking(&key, None)?
                .ok_or_else(|| Error::msg("file store: unreachable unchanged state"))
        })
        .await
    }

    async fn get_if_changed(&self, key: &str, known: &Version) -> Result<Fetch> {
        validate_key(key)?;
        let key = key.to_string();
        let known = known.clone();
        self.blocking(move |s| {
            Ok(match s.get_blocking(&key, Some(&known))? {
                None => Fetch::Unchanged,
                Some(o) => Fetch::Changed(o),
            })
        })
        .await
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta> {
        validate_key(key)?;
        let key = key.to_string();
        self.blocking(move |s| match s.read_header(&key)? {
            Some((h, _)) => Ok(h.meta()),
            None => Err(Error::not_found(&key)),
        })
        .await
    }

    async fn put(&self, key: &str, body: Bytes, opts: PutOptions) -> Result<Version> {
        validate_key(key)?;
        validate_metadata(&opts.metadata)?;
        let key = key.to_string();
        self.blocking(move |s| s.put_blocking(&key, &body, opts))
            .await
    }

    async fn delete(&self, key: &str, condition: Condition) -> Result<()> {
        validate_key(key)?;
        let key = key.to_string();
        self.blocking(move |s| s.delete_blocking(&key, condition))
            .await
    }

    async fn list(&self, prefix: &str, page: ListPage) -> Result<ListResult> {
        validate_prefix(prefix)?;
        let prefix = prefix.to_string();
        self.blocking(move |s| s.list_blocking(&prefix, &page))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_round_trip() {
        for seg in ["a", "hello world", "é", "%41", "a~b", "x.v", "y.d", "#?&=+"] {
            let enc = encode_segment(seg);
            assert!(enc.bytes().all(|b| keep(b) || b == b'%'), "{enc}");
            assert_eq!(decode_segment(&enc).as_deref(), Some(seg));
        }
        let long = "ü".repeat(300);
        let enc = encode_segment(&long);
        assert!(enc.len() < 255);
        assert_eq!(decode_segment(&enc), None);
    }

    #[test]
    fn versions_advance_and_keep_the_incarnation() {
        assert_eq!(next_version("1.00000000000000ab"), "2.00000000000000ab");
        assert_eq!(next_version("41.x"), "42.x");
    }

    // Failed before the fix: a failed fsync of the directory after the
    // rename was reported as a definite failure although the new value was
    // already visible, so a caller would re-apply a change that had landed.
    #[tokio::test]
    async fn an_error_after_the_rename_is_ambiguous_not_a_failure() {
        use std::sync::atomic::Ordering;
        let dir = std::env::temp_dir().join(format!("ifm-dirsync-{}", uuid::Uuid::new_v4()));
        let store = FileStore::open(&dir).unwrap();
        store
            .put("a/k", "old".into(), PutOptions::any())
            .await
            .unwrap();
        store.fail_dir_sync.store(true, Ordering::SeqCst);
        let e = store
            .put("a/k", "new".into(), PutOptions::any())
            .await
            .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Ambiguous, "{e}");
        let e = store.delete("a/k", Condition::Any).await;
        assert_eq!(e.unwrap_err().kind(), crate::ErrorKind::Ambiguous);
        store.fail_dir_sync.store(false, Ordering::SeqCst);
        assert!(store.get("a/k").await.is_err(), "the delete is visible");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_foreign_non_empty_directory() {
        let dir = std::env::temp_dir().join(format!("ifm-foreign-{}", uuid::Uuid::new_v4()));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("notes.txt"), "mine").unwrap();
        let err = FileStore::open(&dir).unwrap_err();
        assert!(err.to_string().contains("not an ifmatch store"), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
