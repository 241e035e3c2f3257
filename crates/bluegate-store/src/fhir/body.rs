//! How SQLite keeps a resource's text: a zstd frame (BLOB), about a fifth of the JSON. CARIN resources
//! are kilobytes of JSON (an EOB is ~6 KB) that repeat the same URLs and codes; compressed, a resource
//! fits in its B-tree page instead of spilling into overflow pages, so an import writes (and fsyncs,
//! and checkpoints) a fraction of the bytes, and the page cache holds five times as many resources.
//! The text is still byte-exact: decompression gives back exactly what was stored. Rows written as
//! TEXT (before compression) are read as they are. PostgreSQL compresses large values itself (TOAST)
//! and keeps TEXT.

use std::cell::RefCell;

use super::resource::MAX_RESOURCE_BYTES;
use super::sql::Bind;
use crate::StoreError;

/// How a backend keeps resource texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    /// The text itself (PostgreSQL).
    Text,
    /// A zstd frame of the text (SQLite).
    Zstd,
}

/// The value to store for `json`.
pub(crate) fn encode(encoding: BodyEncoding, json: String) -> Result<Bind, StoreError> {
    Ok(match encoding {
        BodyEncoding::Text => Bind::Text(json),
        BodyEncoding::Zstd => Bind::Blob(compress(&json)?),
    })
}

/// zstd's fastest level: an EOB compresses ~4.7x at several hundred MB/s.
const LEVEL: i32 = 1;

/// Largest text a stored frame may expand to: the largest accepted resource plus the `meta` the store
/// splices in.
const MAX_BODY_BYTES: u64 = MAX_RESOURCE_BYTES as u64 + 64 * 1024;

thread_local! {
    // A context per thread: creating one per call costs more than compressing or decompressing an EOB
    // (zstd allocates its windows with the C allocator, which maps and unmaps them each time).
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

/// The stored form of `json`.
pub(crate) fn compress(json: &str) -> Result<Vec<u8>, StoreError> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(
                zstd::bulk::Compressor::new(LEVEL)
                    .map_err(|e| StoreError::Database(format!("zstd: {e}")))?,
            );
        }
        let c = c.as_mut().expect("set above");
        c.compress(json.as_bytes())
            .map_err(|e| StoreError::Database(format!("zstd: {e}")))
    })
}

/// The text of a stored frame. The frame's declared size is checked before anything is allocated, so a
/// damaged row cannot make the store allocate more than a resource may be.
pub(crate) fn decompress(frame: &[u8]) -> Result<String, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("stored resource: {why}"));
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n <= MAX_BODY_BYTES => n as usize,
        Ok(Some(_)) => return Err(corrupt("too large")),
        _ => return Err(corrupt("not a zstd frame with its size")),
    };
    let bytes = DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| corrupt(&e.to_string()))?);
        }
        let d = d.as_mut().expect("set above");
        d.decompress(frame, size)
            .map_err(|e| corrupt(&e.to_string()))
    })?;
    if bytes.len() != size {
        return Err(corrupt("shorter than declared"));
    }
    String::from_utf8(bytes).map_err(|_| corrupt("not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_byte_exact() {
        for text in [
            "",
            r#"{"resourceType":"Patient","id":"p","x":12.50,"y":1e2,"z":-0.0}"#,
            "{\n  \"resourceType\" : \"Organization\",\t\"name\": \"Zoë ✓\"\n}",
        ] {
            let frame = compress(text).unwrap();
            assert_eq!(decompress(&frame).unwrap(), text);
        }
        let big = r#"{"resourceType":"ExplanationOfBenefit","item":["#.to_owned()
            + &r#"{"productOrService":{"coding":[{"system":"http://www.ama-assn.org/go/cpt","code":"99213"}]}},"#.repeat(200)
            + "0]}";
        let frame = compress(&big).unwrap();
        assert!(
            frame.len() * 4 < big.len(),
            "{} of {}",
            frame.len(),
            big.len()
        );
        assert_eq!(decompress(&frame).unwrap(), big);
    }

    #[test]
    fn damaged_frames_are_refused() {
        let frame = compress(r#"{"resourceType":"Patient","id":"p"}"#).unwrap();
        assert!(decompress(&frame[..frame.len() - 2]).is_err());
        assert!(decompress(b"{\"resourceType\":\"Patient\"}").is_err());
        assert!(decompress(&[]).is_err());
        // A frame claiming to expand to far more than a resource may be.
        let huge = zstd::bulk::compress(&vec![b' '; (MAX_BODY_BYTES + 1) as usize], 1).unwrap();
        assert!(matches!(decompress(&huge), Err(StoreError::Corrupt(_))));
        // Not UTF-8.
        let latin1 = zstd::bulk::compress(&[0xff, 0xfe, 0x41], 1).unwrap();
        assert!(decompress(&latin1).is_err());
    }
}
