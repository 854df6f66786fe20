//! The byte formats of tenant databases: log entries and checkpoints in the
//! store, the cache sidecar on local disk, and the parsing of SQLite's WAL.
//!
//! Every stored record ends with the SHA-256 of everything before it, so a
//! truncated or corrupted record is detected and never applied.
//!
//! Public only so that the fuzz tests (`tests/fuzz`, `fuzz/`) can reach the
//! decoders; not a stable API.

use sha2::{Digest, Sha256};

/// The hash kept per page in the sidecar (the first 16 bytes of its SHA-256).
pub type PageHash = [u8; 16];

const LOG_MAGIC: &[u8; 8] = b"IFMDLOG1";
/// A log entry that carries a [`CommitRecord`].
const LOG_MAGIC_RECORD: &[u8; 8] = b"IFMDLOG2";
const CKP_MAGIC: &[u8; 8] = b"IFMDCKP1";
/// A checkpoint that carries [`CommitRecord`]s.
const CKP_MAGIC_RECORDS: &[u8; 8] = b"IFMDCKP2";
const SIDECAR_MAGIC: &[u8; 8] = b"IFMDSID3";

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct FormatError(pub(crate) String);

fn bad(msg: impl Into<String>) -> FormatError {
    FormatError(msg.into())
}

/// Hashes one page.
pub fn page_hash(page: &[u8]) -> PageHash {
    let d = Sha256::digest(page);
    let mut h = [0u8; 16];
    h.copy_from_slice(&d[..16]);
    h
}

/// Hashes every page of an image.
pub fn page_hashes(image: &[u8], page_size: usize) -> Vec<PageHash> {
    image.chunks(page_size).map(page_hash).collect()
}

fn seal(mut buf: Vec<u8>) -> Vec<u8> {
    let d = Sha256::digest(&buf);
    buf.extend_from_slice(&d);
    buf
}

fn unseal(buf: &[u8]) -> Result<&[u8], FormatError> {
    if buf.len() < 32 {
        return Err(bad("record shorter than its checksum"));
    }
    let (body, sum) = buf.split_at(buf.len() - 32);
    if Sha256::digest(body).as_slice() != sum {
        return Err(bad("record checksum mismatch (truncated or corrupt)"));
    }
    Ok(body)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FormatError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| bad("record ends early"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, FormatError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, FormatError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }
    fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    /// A length-prefixed byte string.
    fn bytes(&mut self) -> Result<&'a [u8], FormatError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

fn put_bytes(b: &mut Vec<u8>, v: &[u8]) {
    b.extend_from_slice(&(v.len() as u32).to_le_bytes());
    b.extend_from_slice(v);
}

/// The id and result of an idempotent commit (see `TenantDbs::write_once`),
/// carried by its log entry, and then by every checkpoint and cached copy
/// while it is young enough to be kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRecord {
    /// The caller's commit id.
    pub id: String,
    /// The seq the commit landed at.
    pub seq: u64,
    /// When the writer sent it (ms since the epoch, the writer's clock).
    pub at_ms: u64,
    /// The serialized result of the commit (JSON).
    pub result: Vec<u8>,
}

impl CommitRecord {
    fn encode_into(&self, b: &mut Vec<u8>) {
        put_bytes(b, self.id.as_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.at_ms.to_le_bytes());
        put_bytes(b, &self.result);
    }
    fn decode_from(r: &mut Reader<'_>) -> Result<CommitRecord, FormatError> {
        let id = String::from_utf8(r.bytes()?.to_vec()).map_err(|_| bad("commit id not UTF-8"))?;
        let seq = r.u64()?;
        let at_ms = r.u64()?;
        let result = r.bytes()?.to_vec();
        Ok(CommitRecord {
            id,
            seq,
            at_ms,
            result,
        })
    }
    /// The bytes this record takes in a record list.
    pub fn encoded_len(&self) -> usize {
        24 + self.id.len() + self.result.len()
    }
}

fn encode_records(b: &mut Vec<u8>, records: &[CommitRecord]) {
    b.extend_from_slice(&(records.len() as u32).to_le_bytes());
    for r in records {
        r.encode_into(b);
    }
}

fn decode_records(r: &mut Reader<'_>) -> Result<Vec<CommitRecord>, FormatError> {
    let n = r.u32()? as usize;
    // A count is only a claim: reserve no more records than the bytes could hold.
    let mut out = Vec::with_capacity(n.min(r.rest().len() / 24));
    for _ in 0..n {
        out.push(CommitRecord::decode_from(r)?);
    }
    Ok(out)
}

/// One commit: the pages it changed and the database size after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The sequence number this entry commits.
    pub seq: u64,
    /// A random id of the writer's attempt (tells our own entry from another's).
    pub writer: u64,
    /// The page size in bytes.
    pub page_size: u32,
    /// The database size in pages after the commit.
    pub page_count: u32,
    /// The changed pages: 1-based page number and content.
    pub pages: Vec<(u32, Vec<u8>)>,
    /// The id and result of an idempotent commit.
    pub commit: Option<CommitRecord>,
}

impl LogEntry {
    /// Encodes the entry.
    pub fn encode(&self) -> Vec<u8> {
        let extra = self.commit.as_ref().map_or(0, |c| c.encoded_len());
        let mut b =
            Vec::with_capacity(72 + extra + self.pages.len() * (4 + self.page_size as usize));
        let magic = match self.commit {
            Some(_) => LOG_MAGIC_RECORD,
            None => LOG_MAGIC,
        };
        b.extend_from_slice(magic);
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.writer.to_le_bytes());
        b.extend_from_slice(&self.page_size.to_le_bytes());
        b.extend_from_slice(&self.page_count.to_le_bytes());
        if let Some(c) = &self.commit {
            c.encode_into(&mut b);
        }
        b.extend_from_slice(&(self.pages.len() as u32).to_le_bytes());
        for (n, p) in &self.pages {
            b.extend_from_slice(&n.to_le_bytes());
            b.extend_from_slice(p);
        }
        seal(b)
    }

    /// Decodes and checks an entry.
    pub fn decode(buf: &[u8]) -> Result<LogEntry, FormatError> {
        let mut r = Reader {
            buf: unseal(buf)?,
            pos: 0,
        };
        let with_record = match r.take(8)? {
            m if m == LOG_MAGIC => false,
            m if m == LOG_MAGIC_RECORD => true,
            _ => return Err(bad("not a log entry")),
        };
        let seq = r.u64()?;
        let writer = r.u64()?;
        let page_size = r.u32()?;
        let page_count = r.u32()?;
        let commit = if with_record {
            let c = CommitRecord::decode_from(&mut r)?;
            if c.seq != seq {
                return Err(bad("commit record of another seq"));
            }
            Some(c)
        } else {
            None
        };
        let n = r.u32()?;
        check_page_size(page_size)?;
        // A count is only a claim: reserve no more pages than the record holds.
        let room = r.rest().len() / (4 + page_size as usize);
        let mut pages = Vec::with_capacity((n as usize).min(room));
        for _ in 0..n {
            let no = r.u32()?;
            if no == 0 || no > page_count {
                return Err(bad(format!("page {no} outside 1..={page_count}")));
            }
            pages.push((no, r.take(page_size as usize)?.to_vec()));
        }
        if !r.rest().is_empty() {
            return Err(bad("trailing bytes after log entry"));
        }
        Ok(LogEntry {
            seq,
            writer,
            page_size,
            page_count,
            pages,
            commit,
        })
    }
}

fn check_page_size(ps: u32) -> Result<(), FormatError> {
    if (512..=65536).contains(&ps) && ps.is_power_of_two() {
        Ok(())
    } else {
        Err(bad(format!("invalid page size {ps}")))
    }
}

/// A full database image as of a sequence number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The sequence number the image reflects.
    pub seq: u64,
    /// The page size in bytes.
    pub page_size: u32,
    /// The commit records it carries (see [`CommitRecord`]).
    pub records: Vec<CommitRecord>,
    /// The image (a whole number of pages).
    pub image: Vec<u8>,
}

/// A decoded checkpoint that borrows its image from the encoded bytes (no copy).
#[derive(Debug)]
pub struct CheckpointRef<'a> {
    /// The sequence number the image reflects.
    pub seq: u64,
    /// The page size in bytes.
    pub page_size: u32,
    /// The commit records it carries.
    pub records: Vec<CommitRecord>,
    /// The image (a whole number of pages).
    pub image: &'a [u8],
}

impl Checkpoint {
    /// Encodes a checkpoint without commit records.
    pub fn encode(seq: u64, page_size: u32, image: &[u8]) -> Vec<u8> {
        let mut b = Self::header(seq, page_size, &[], image.len());
        b.extend_from_slice(image);
        seal(b)
    }

    /// The encoding up to the image, with room reserved for the image and the
    /// seal: append exactly `image_len` bytes, then [`Checkpoint::seal`].
    pub fn header(seq: u64, page_size: u32, records: &[CommitRecord], image_len: usize) -> Vec<u8> {
        let extra: usize = records.iter().map(|r| r.encoded_len()).sum();
        let mut b = Vec::with_capacity(image_len + extra + 64);
        if records.is_empty() {
            b.extend_from_slice(CKP_MAGIC);
        } else {
            b.extend_from_slice(CKP_MAGIC_RECORDS);
        }
        b.extend_from_slice(&seq.to_le_bytes());
        b.extend_from_slice(&page_size.to_le_bytes());
        if !records.is_empty() {
            encode_records(&mut b, records);
        }
        b
    }

    /// Appends the checksum to a buffer started by [`Checkpoint::header`].
    pub fn seal(buf: Vec<u8>) -> Vec<u8> {
        seal(buf)
    }

    /// Encodes this checkpoint (the inverse of [`Checkpoint::decode`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = Self::header(self.seq, self.page_size, &self.records, self.image.len());
        b.extend_from_slice(&self.image);
        seal(b)
    }

    /// Decodes and checks a checkpoint.
    pub fn decode(buf: &[u8]) -> Result<Checkpoint, FormatError> {
        let c = Self::decode_ref(buf)?;
        Ok(Checkpoint {
            seq: c.seq,
            page_size: c.page_size,
            records: c.records,
            image: c.image.to_vec(),
        })
    }

    /// Decodes and checks a checkpoint, borrowing the image.
    pub fn decode_ref(buf: &[u8]) -> Result<CheckpointRef<'_>, FormatError> {
        let mut r = Reader {
            buf: unseal(buf)?,
            pos: 0,
        };
        let with_records = match r.take(8)? {
            m if m == CKP_MAGIC => false,
            m if m == CKP_MAGIC_RECORDS => true,
            _ => return Err(bad("not a checkpoint")),
        };
        let seq = r.u64()?;
        let page_size = r.u32()?;
        check_page_size(page_size)?;
        let records = if with_records {
            let v = decode_records(&mut r)?;
            if v.is_empty() {
                return Err(bad("a checkpoint with a record list holds no records"));
            }
            v
        } else {
            Vec::new()
        };
        let image = r.rest();
        if !image.len().is_multiple_of(page_size as usize) {
            return Err(bad("checkpoint image is not a whole number of pages"));
        }
        Ok(CheckpointRef {
            seq,
            page_size,
            records,
            image,
        })
    }
}

/// What the cache knows about its copy of one tenant's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sidecar {
    /// The tenant id (to rebuild the cache index after a restart).
    pub tenant: String,
    /// The sequence number the local file reflects.
    pub seq: u64,
    /// The page size in bytes.
    pub page_size: u32,
    /// When the copy was last known current (ms since the epoch).
    pub validated_ms: u64,
    /// Commits applied since the last checkpoint this copy knows of.
    pub tail_entries: u64,
    /// Page bytes of those commits.
    pub tail_bytes: u64,
    /// The hash of every page of the local file.
    pub hashes: Vec<PageHash>,
    /// The commit records of this copy (see [`CommitRecord`]), oldest first.
    pub records: Vec<CommitRecord>,
}

impl Sidecar {
    /// Encodes the sidecar.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.tenant.len() + self.hashes.len() * 16);
        b.extend_from_slice(SIDECAR_MAGIC);
        b.extend_from_slice(&(self.tenant.len() as u32).to_le_bytes());
        b.extend_from_slice(self.tenant.as_bytes());
        b.extend_from_slice(&self.seq.to_le_bytes());
        b.extend_from_slice(&self.page_size.to_le_bytes());
        b.extend_from_slice(&self.validated_ms.to_le_bytes());
        b.extend_from_slice(&self.tail_entries.to_le_bytes());
        b.extend_from_slice(&self.tail_bytes.to_le_bytes());
        b.extend_from_slice(&(self.hashes.len() as u32).to_le_bytes());
        for h in &self.hashes {
            b.extend_from_slice(h);
        }
        encode_records(&mut b, &self.records);
        seal(b)
    }

    /// Decodes and checks a sidecar.
    pub fn decode(buf: &[u8]) -> Result<Sidecar, FormatError> {
        let mut r = Reader {
            buf: unseal(buf)?,
            pos: 0,
        };
        if r.take(8)? != SIDECAR_MAGIC {
            return Err(bad("not a sidecar"));
        }
        let tl = r.u32()? as usize;
        let tenant =
            String::from_utf8(r.take(tl)?.to_vec()).map_err(|_| bad("tenant not UTF-8"))?;
        let seq = r.u64()?;
        let page_size = r.u32()?;
        check_page_size(page_size)?;
        let validated_ms = r.u64()?;
        let tail_entries = r.u64()?;
        let tail_bytes = r.u64()?;
        let n = r.u32()? as usize;
        // A count is only a claim: reserve no more hashes than the record holds.
        let mut hashes = Vec::with_capacity(n.min(r.rest().len() / 16));
        for _ in 0..n {
            let mut h = [0u8; 16];
            h.copy_from_slice(r.take(16)?);
            hashes.push(h);
        }
        let records = decode_records(&mut r)?;
        if !r.rest().is_empty() {
            return Err(bad("trailing bytes after sidecar"));
        }
        Ok(Sidecar {
            tenant,
            seq,
            page_size,
            validated_ms,
            tail_entries,
            tail_bytes,
            hashes,
            records,
        })
    }
}

/// The committed content of a SQLite WAL file: the last frame of every page,
/// and the database size in pages after the last commit.
#[derive(Debug, Default)]
pub struct WalContent {
    /// Page number and content, in page order.
    pub pages: Vec<(u32, Vec<u8>)>,
    /// The database size after the last commit (`None`: nothing committed).
    pub page_count: Option<u32>,
}

/// Where the committed pages of a WAL are: the offset of the last committed
/// frame of every page, and the database size in pages after the last commit.
/// Built by reading the frame headers once, without holding any page, so a
/// transaction's size can be checked before its pages are read.
#[derive(Debug, Default)]
pub struct WalIndex {
    /// Page number → offset of its content, for pages `1..=page_count`.
    pub frames: std::collections::BTreeMap<u32, u64>,
    /// The database size after the last commit (`None`: nothing committed).
    pub page_count: Option<u32>,
    /// The page size in bytes.
    pub page_size: u32,
}

impl WalIndex {
    /// Reads a WAL (see <https://sqlite.org/fileformat2.html#walformat>) from
    /// its start: frames whose salts match the header, up to the last commit frame.
    pub fn scan<R: std::io::Read>(r: &mut R, page_size: u32) -> Result<WalIndex, FormatError> {
        use std::io::Read as _;
        let mut idx = WalIndex {
            page_size,
            ..WalIndex::default()
        };
        let mut header = [0u8; 32];
        let got = read_full(r, &mut header)?;
        if got == 0 {
            return Ok(idx);
        }
        if got < 32 {
            return Err(bad("WAL shorter than its header"));
        }
        let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let magic = be32(&header[0..4]);
        if magic != 0x377f_0682 && magic != 0x377f_0683 {
            return Err(bad("not a WAL file"));
        }
        if be32(&header[8..12]) != page_size {
            return Err(bad("WAL page size differs from the database's"));
        }
        let salts = &header[16..24];
        let mut pending: Vec<(u32, u64)> = Vec::new();
        let mut off = 32u64;
        let mut h = [0u8; 24];
        loop {
            if read_full(r, &mut h)? < 24 {
                break;
            }
            if &h[8..16] != salts {
                break;
            }
            // The frame counts only if its page is all there.
            let skipped =
                std::io::copy(&mut r.by_ref().take(page_size as u64), &mut std::io::sink())
                    .map_err(|e| bad(format!("reading the WAL: {e}")))?;
            if skipped < page_size as u64 {
                break;
            }
            pending.push((be32(&h[0..4]), off + 24));
            let commit = be32(&h[4..8]);
            if commit != 0 {
                for (p, at) in pending.drain(..) {
                    idx.frames.insert(p, at);
                }
                idx.page_count = Some(commit);
            }
            off += 24 + page_size as u64;
        }
        match idx.page_count {
            Some(count) => idx.frames.retain(|p, _| *p >= 1 && *p <= count),
            None => idx.frames.clear(),
        }
        Ok(idx)
    }

    /// The bytes of the committed pages.
    pub fn bytes(&self) -> u64 {
        self.frames.len() as u64 * self.page_size as u64
    }

    /// Reads the committed pages, in page order.
    pub fn read_pages<R: std::io::Read + std::io::Seek>(
        &self,
        r: &mut R,
    ) -> std::io::Result<Vec<(u32, Vec<u8>)>> {
        let mut pages = Vec::with_capacity(self.frames.len());
        for (p, at) in &self.frames {
            r.seek(std::io::SeekFrom::Start(*at))?;
            let mut page = vec![0u8; self.page_size as usize];
            r.read_exact(&mut page)?;
            pages.push((*p, page));
        }
        Ok(pages)
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full<R: std::io::Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, FormatError> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(bad(format!("reading the WAL: {e}"))),
        }
    }
    Ok(n)
}

/// Parses a WAL held in memory (see [`WalIndex::scan`]).
pub fn parse_wal(wal: &[u8], page_size: u32) -> Result<WalContent, FormatError> {
    let mut c = std::io::Cursor::new(wal);
    let idx = WalIndex::scan(&mut c, page_size)?;
    let pages = idx
        .read_pages(&mut c)
        .map_err(|e| bad(format!("reading the WAL: {e}")))?;
    Ok(WalContent {
        page_count: idx.page_count,
        pages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_detect_corruption() {
        let e = LogEntry {
            seq: 7,
            writer: 42,
            page_size: 512,
            page_count: 3,
            pages: vec![(1, vec![1; 512]), (3, vec![3; 512])],
            commit: None,
        };
        let b = e.encode();
        assert_eq!(LogEntry::decode(&b).unwrap(), e);
        let mut c = b.clone();
        c[20] ^= 1;
        assert!(LogEntry::decode(&c).is_err());
        assert!(LogEntry::decode(&b[..b.len() - 1]).is_err());

        let rec = CommitRecord {
            id: "req-1".into(),
            seq: 7,
            at_ms: 99,
            result: b"{}".to_vec(),
        };
        let e2 = LogEntry {
            commit: Some(rec.clone()),
            ..e
        };
        assert_eq!(LogEntry::decode(&e2.encode()).unwrap(), e2);

        let k = Checkpoint::encode(3, 512, &[9; 1024]);
        let d = Checkpoint::decode(&k).unwrap();
        assert_eq!((d.seq, d.page_size, d.image.len()), (3, 512, 1024));
        assert_eq!(d.to_bytes(), k);
        let with = Checkpoint {
            records: vec![rec.clone()],
            ..d
        };
        assert_eq!(Checkpoint::decode(&with.to_bytes()).unwrap(), with);

        let s = Sidecar {
            tenant: "a/b".into(),
            seq: 1,
            page_size: 4096,
            validated_ms: 5,
            tail_entries: 2,
            tail_bytes: 8192,
            hashes: vec![[1; 16], [2; 16]],
            records: vec![rec],
        };
        assert_eq!(Sidecar::decode(&s.encode()).unwrap(), s);
    }
}
