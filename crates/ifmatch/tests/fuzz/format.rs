//! The tenant-database record formats (`ifmatch::tenantdb::format`): every
//! record decodes to what was encoded; corrupt, truncated or extended bytes are
//! an error; a record with a valid checksum but hostile length fields is an
//! error too, and never makes the decoder allocate more than its input
//! justifies; decoding is canonical (what decodes re-encodes to the same bytes).

use ifmatch::tenantdb::format::{Checkpoint, LogEntry, Sidecar, parse_wal};
use proptest::prelude::*;
use sha2::{Digest, Sha256};

use crate::alloc::largest_allocation;

/// The most a decoder may allocate at once for an input of `len` bytes.
fn allocation_bound(len: usize) -> usize {
    2 * len + 4096
}

/// Appends the SHA-256 checksum every record ends with.
fn seal(mut body: Vec<u8>) -> Vec<u8> {
    let sum = Sha256::digest(&body);
    body.extend_from_slice(&sum);
    body
}

/// Decodes `bytes` with all three decoders: never a panic, never a large
/// allocation, and whatever decodes re-encodes to exactly `bytes`.
fn decode_all(bytes: &[u8]) -> Result<usize, TestCaseError> {
    let bound = allocation_bound(bytes.len());
    let mut ok = 0;
    let (log, largest) = largest_allocation(|| LogEntry::decode(bytes));
    prop_assert!(
        largest <= bound,
        "log entry decoder allocated {} for {} bytes",
        largest,
        bytes.len()
    );
    if let Ok(e) = log {
        prop_assert_eq!(e.encode(), bytes, "log entry not canonical");
        ok += 1;
    }
    let (ckp, largest) = largest_allocation(|| Checkpoint::decode(bytes));
    prop_assert!(
        largest <= bound,
        "checkpoint decoder allocated {} for {} bytes",
        largest,
        bytes.len()
    );
    if let Ok(c) = ckp {
        prop_assert_eq!(c.to_bytes(), bytes, "checkpoint not canonical");
        ok += 1;
    }
    let (side, largest) = largest_allocation(|| Sidecar::decode(bytes));
    prop_assert!(
        largest <= bound,
        "sidecar decoder allocated {} for {} bytes",
        largest,
        bytes.len()
    );
    if let Ok(s) = side {
        prop_assert_eq!(s.encode(), bytes, "sidecar not canonical");
        ok += 1;
    }
    Ok(ok)
}

fn page_size() -> impl Strategy<Value = u32> {
    prop::sample::select(vec![512u32, 1024, 2048, 4096])
}

fn log_entry() -> impl Strategy<Value = LogEntry> {
    (page_size(), 1u32..64).prop_flat_map(|(ps, count)| {
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(
                (1..=count, prop::collection::vec(any::<u8>(), ps as usize)),
                0..4,
            ),
        )
            .prop_map(move |(seq, writer, pages)| LogEntry {
                seq,
                writer,
                page_size: ps,
                page_count: count,
                pages,
                commit: None,
            })
    })
}

fn checkpoint() -> impl Strategy<Value = (u64, u32, Vec<u8>)> {
    (page_size(), 0usize..4).prop_flat_map(|(ps, n)| {
        (
            any::<u64>(),
            Just(ps),
            prop::collection::vec(any::<u8>(), n * ps as usize),
        )
    })
}

fn sidecar() -> impl Strategy<Value = Sidecar> {
    (
        "\\PC{0,20}",
        any::<u64>(),
        page_size(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(any::<[u8; 16]>(), 0..40),
    )
        .prop_map(
            |(tenant, seq, page_size, validated_ms, tail_entries, tail_bytes, hashes)| Sidecar {
                tenant,
                seq,
                page_size,
                validated_ms,
                tail_entries,
                tail_bytes,
                hashes,
                records: Vec::new(),
            },
        )
}

/// One way of damaging a valid record.
#[derive(Debug, Clone)]
enum Damage {
    FlipBit(prop::sample::Index, u8),
    Truncate(prop::sample::Index),
    Append(Vec<u8>),
    Splice(prop::sample::Index, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0u8..8).prop_map(|(i, b)| Damage::FlipBit(i, b)),
        any::<prop::sample::Index>().prop_map(Damage::Truncate),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Damage::Append),
        (
            any::<prop::sample::Index>(),
            prop::collection::vec(any::<u8>(), 1..8)
        )
            .prop_map(|(i, b)| Damage::Splice(i, b)),
    ]
}

fn apply(d: &Damage, mut b: Vec<u8>) -> Vec<u8> {
    match d {
        Damage::FlipBit(i, bit) => {
            let i = i.index(b.len());
            b[i] ^= 1 << bit;
        }
        Damage::Truncate(i) => b.truncate(i.index(b.len())),
        Damage::Append(x) => b.extend_from_slice(x),
        Damage::Splice(i, x) => {
            let i = i.index(b.len());
            b.splice(i..i, x.iter().copied());
        }
    }
    b
}

/// A sealed record with a valid magic and arbitrary (often hostile) fields.
fn hostile_record() -> impl Strategy<Value = Vec<u8>> {
    let count = prop_oneof![
        0u32..8,
        Just(u32::MAX),
        Just(u32::MAX / 16),
        Just(1 << 24),
        any::<u32>()
    ];
    let ps = prop_oneof![page_size(), any::<u32>()];
    prop_oneof![
        // log entry: magic, seq, writer, page size, page count, n, then page data
        (
            any::<u64>(),
            any::<u64>(),
            ps.clone(),
            count.clone(),
            count.clone(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(seq, w, ps, pc, n, tail)| {
                let mut b = b"IFMDLOG1".to_vec();
                b.extend_from_slice(&seq.to_le_bytes());
                b.extend_from_slice(&w.to_le_bytes());
                b.extend_from_slice(&ps.to_le_bytes());
                b.extend_from_slice(&pc.to_le_bytes());
                b.extend_from_slice(&n.to_le_bytes());
                b.extend_from_slice(&tail);
                seal(b)
            }),
        // checkpoint: magic, seq, page size, image
        (
            any::<u64>(),
            ps.clone(),
            prop::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(seq, ps, tail)| {
                let mut b = b"IFMDCKP1".to_vec();
                b.extend_from_slice(&seq.to_le_bytes());
                b.extend_from_slice(&ps.to_le_bytes());
                b.extend_from_slice(&tail);
                seal(b)
            }),
        // sidecar: magic, tenant length and bytes, seq, page size, 3 counters, n, hashes
        (
            count.clone(),
            prop::collection::vec(any::<u8>(), 0..8),
            ps,
            count,
            prop::collection::vec(any::<u8>(), 0..80)
        )
            .prop_map(|(tl, tenant, ps, n, tail)| {
                let mut b = b"IFMDSID3".to_vec();
                b.extend_from_slice(&tl.to_le_bytes());
                b.extend_from_slice(&tenant);
                b.extend_from_slice(&7u64.to_le_bytes());
                b.extend_from_slice(&ps.to_le_bytes());
                b.extend_from_slice(&[0; 24]);
                b.extend_from_slice(&n.to_le_bytes());
                b.extend_from_slice(&tail);
                seal(b)
            }),
    ]
}

#[test]
fn corpus_seeds_decode_safely() {
    for seed in crate::corpus("tenantdb_format") {
        assert_eq!(decode_all(&seed).unwrap(), 1, "a seed that does not decode");
        // The seeds are sealed records: each kind decodes from its seed, and
        // each decoder still rejects it after a flipped bit.
        let mut flipped = seed.clone();
        if let Some(b) = flipped.get_mut(10) {
            *b ^= 0x40;
        }
        assert_eq!(decode_all(&flipped).unwrap(), 0);
    }
}

#[test]
fn regressions() {
    // A sealed log entry claiming 2^32-1 pages and carrying none: an error,
    // without reserving room for four billion pages first.
    let mut b = b"IFMDLOG1".to_vec();
    b.extend_from_slice(&[0; 16]);
    b.extend_from_slice(&512u32.to_le_bytes());
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode_all(&seal(b)).unwrap(), 0);
    // The same for a sidecar claiming 2^32-1 hashes.
    let mut b = b"IFMDSID3".to_vec();
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(&4096u32.to_le_bytes());
    b.extend_from_slice(&[0; 24]);
    b.extend_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode_all(&seal(b)).unwrap(), 0);
    // Empty and tiny inputs.
    for n in 0..40 {
        assert_eq!(decode_all(&vec![0; n]).unwrap(), 0);
    }
}

proptest! {
    #![proptest_config(crate::config(512))]

    #[test]
    fn log_entries_round_trip(e in log_entry()) {
        let bytes = e.encode();
        prop_assert_eq!(LogEntry::decode(&bytes).unwrap(), e);
        prop_assert_eq!(decode_all(&bytes)?, 1);
    }

    #[test]
    fn checkpoints_round_trip((seq, ps, image) in checkpoint()) {
        let bytes = Checkpoint::encode(seq, ps, &image);
        let c = Checkpoint::decode(&bytes).unwrap();
        prop_assert_eq!((c.seq, c.page_size, &c.image), (seq, ps, &image));
        prop_assert_eq!(decode_all(&bytes)?, 1);
    }

    #[test]
    fn sidecars_round_trip(s in sidecar()) {
        let bytes = s.encode();
        prop_assert_eq!(Sidecar::decode(&bytes).unwrap(), s);
        prop_assert_eq!(decode_all(&bytes)?, 1);
    }

    #[test]
    fn damaged_records_are_rejected(
        which in 0..3usize,
        e in log_entry(),
        c in checkpoint(),
        s in sidecar(),
        d in damage(),
    ) {
        let good = match which {
            0 => e.encode(),
            1 => Checkpoint::encode(c.0, c.1, &c.2),
            _ => s.encode(),
        };
        let bad = apply(&d, good);
        prop_assert_eq!(decode_all(&bad)?, 0, "{:?} was accepted", d);
    }

    #[test]
    fn arbitrary_bytes_are_rejected(b in prop::collection::vec(any::<u8>(), 0..600)) {
        prop_assert_eq!(decode_all(&b)?, 0);
    }

    #[test]
    fn hostile_sealed_records_fail_cleanly(b in hostile_record()) {
        decode_all(&b)?;
    }

    /// The WAL parser never panics, and what it returns is within its own claims.
    #[test]
    fn wal_parsing_is_total(
        ps in prop_oneof![page_size(), any::<u32>()],
        frames in prop::collection::vec((0u32..6, prop_oneof![Just(0u32), 1u32..6], any::<bool>(), any::<u8>()), 0..6),
        junk in prop::collection::vec(any::<u8>(), 0..40),
    ) {
        // A well-formed header for `ps`, frames of that size, then junk.
        let small = ps <= 4096;
        let mut wal = Vec::new();
        wal.extend_from_slice(&0x377f_0682u32.to_be_bytes());
        wal.extend_from_slice(&3_007_000u32.to_be_bytes());
        wal.extend_from_slice(&ps.to_be_bytes());
        wal.extend_from_slice(&[0; 4]);
        wal.extend_from_slice(b"saltsalt");
        wal.extend_from_slice(&[0; 8]);
        if small {
            for (page, commit, good_salt, fill) in &frames {
                wal.extend_from_slice(&page.to_be_bytes());
                wal.extend_from_slice(&commit.to_be_bytes());
                wal.extend_from_slice(if *good_salt { b"saltsalt" } else { b"tlasltas" });
                wal.extend_from_slice(&[0; 8]);
                wal.extend(std::iter::repeat_n(*fill, ps as usize));
            }
        }
        wal.extend_from_slice(&junk);
        let (parsed, largest) = largest_allocation(|| parse_wal(&wal, ps));
        prop_assert!(largest <= allocation_bound(wal.len()));
        if let Ok(w) = parsed {
            let count = w.page_count.unwrap_or(0);
            prop_assert_eq!(w.page_count.is_none(), w.pages.is_empty() && w.page_count.is_none());
            let mut last = 0;
            for (p, data) in &w.pages {
                prop_assert!(*p > last && *p <= count, "page {} of {}", p, count);
                prop_assert_eq!(data.len(), ps as usize);
                last = *p;
            }
        }
        // Arbitrary bytes as a WAL, too.
        let _ = parse_wal(&junk, ps);
    }
}
