//! `If-Match` / `If-None-Match` parsing never panics, and a parsed list,
//! formatted again, parses to the same list.
#![no_main]

use ifmatch_server::precondition::{TagList, etag_for, parse_tag_list, version_of};
use libfuzzer_sys::fuzz_target;

fn format_list(list: &TagList) -> String {
    match list {
        TagList::Any => "*".into(),
        TagList::Tags(tags) => tags
            .iter()
            .map(|t| format!("{}\"{}\"", if t.weak { "W/" } else { "" }, t.tag))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = parse_tag_list("If-Match", data) {
        let again = parse_tag_list("If-Match", format_list(&list).as_bytes());
        assert_eq!(again.as_ref(), Ok(&list));
        if let TagList::Tags(tags) = &list {
            for t in tags {
                // Every tag names a version whose own ETag is visible ASCII and parses.
                let etag = etag_for(&version_of(t));
                assert!(etag.bytes().all(|b| (0x21..0x7f).contains(&b)));
                assert!(parse_tag_list("If-Match", etag.as_bytes()).is_ok());
            }
        }
    }
});
