//! How SQLite keeps a resource's text: a zstd frame (BLOB), about a fifth of the JSON, or far less
//! with the store's own dictionary. CARIN resources are kilobytes of JSON (an EOB is ~6 KB) that
//! repeat the same URLs and codes; compressed, a resource fits in its B-tree page instead of spilling
//! into overflow pages, so an import writes (and fsyncs, and checkpoints) a fraction of the bytes, and
//! the page cache holds several times as many resources. The text is still byte-exact: decompression
//! gives back exactly what was stored. Rows written as TEXT (before compression) are read as they are.
//! PostgreSQL compresses large values itself (TOAST) and keeps TEXT.
//!
//! A payer's resources resemble each other far more than they resemble JSON at large, so a store
//! learns a zstd dictionary per resource type from the first import batch that holds enough resources
//! of that type ([`render_batch_ahead`]) and compresses with it from then on: each frame names its
//! dictionary by id, dictionaries are kept in the store forever (a frame is readable as long as its
//! dictionary is), and frames without one stay readable. On synthetic CARIN data an EOB compresses
//! ~17x instead of ~4.5x, three times as fast.

use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{LazyLock, RwLock};

use super::params::ResourceType;
use super::resource::MAX_RESOURCE_BYTES;
use super::sql::Bind;
use crate::StoreError;

/// How a backend keeps resource texts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyEncoding {
    /// The text itself (PostgreSQL).
    Text,
    /// A zstd frame of the text (SQLite), with the store's dictionary for the resource's type if it
    /// has one.
    Zstd(Dictionaries),
}

/// A store's current dictionaries, one per resource type (resources of one type are alike; a
/// dictionary learned from Organizations does little for EOBs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dictionaries {
    by_type: [Option<&'static BodyDict>; ResourceType::ALL.len()],
    /// Types whose learning was tried here and gave nothing (not tried again by this encoding).
    tried: u16,
}

impl Dictionaries {
    /// The dictionary for `rt`.
    pub fn get(&self, rt: ResourceType) -> Option<&'static BodyDict> {
        self.by_type[rt as usize]
    }

    /// Uses `dict` for `rt` from now on.
    pub fn set(&mut self, rt: ResourceType, dict: &'static BodyDict) {
        self.by_type[rt as usize] = Some(dict);
    }

    fn should_learn(&self, rt: ResourceType) -> bool {
        self.get(rt).is_none() && self.tried & (1 << rt as u16) == 0
    }
}

/// Renders a batch's first versions ahead (see `PreparedResource::render_ahead`). With a compressed
/// `encoding` that has no dictionary for a type of which the batch holds enough resources, first
/// learns one from them (once per type and encoding) and adds it to `encoding`; returns what was
/// learned, for the caller to hand to `FhirStore::install_body_dictionary` before writing the batch.
pub fn render_batch_ahead(
    batch: &mut [super::PreparedResource],
    now: time::OffsetDateTime,
    encoding: &mut BodyEncoding,
) -> Result<Vec<(ResourceType, &'static BodyDict)>, StoreError> {
    let mut learned = Vec::new();
    if let BodyEncoding::Zstd(dicts) = encoding {
        for rt in ResourceType::ALL {
            if !dicts.should_learn(rt) {
                continue;
            }
            let samples: Vec<&str> = batch
                .iter()
                .filter(|p| p.resource_type() == rt)
                .map(|p| p.text())
                .collect();
            if samples.len() < MIN_DICT_SAMPLES {
                continue;
            }
            match learn_dictionary(&samples) {
                Some(d) => {
                    dicts.set(rt, d);
                    learned.push((rt, d));
                }
                None => dicts.tried |= 1 << rt as u16,
            }
        }
    }
    for p in batch {
        p.render_ahead(now, *encoding)?;
    }
    Ok(learned)
}

/// A zstd dictionary learned by a store, ready for both directions. Dictionaries live for the whole
/// process (compression contexts are per thread and refer to them), one per id: a store learns at
/// most one per resource type, so there are few.
pub struct BodyDict {
    id: u32,
    bytes: Vec<u8>,
    enc: zstd::dict::EncoderDictionary<'static>,
    dec: zstd::dict::DecoderDictionary<'static>,
}

impl BodyDict {
    /// The id written in every frame compressed with it.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The dictionary as stored.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The dictionary for `bytes` (a zstd dictionary, its id in its header), registered for this
    /// process, or the one already registered under that id.
    pub fn register(bytes: Vec<u8>) -> Result<&'static BodyDict, StoreError> {
        let bad = |why: &str| StoreError::Corrupt(format!("resource dictionary: {why}"));
        if bytes.len() < 8 || bytes[..4] != DICT_MAGIC {
            return Err(bad("not a zstd dictionary"));
        }
        let id = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if id == 0 {
            return Err(bad("no id"));
        }
        // zstd's prepared dictionaries panic on bytes zstd cannot load (a damaged row): try first.
        if zstd::zstd_safe::CDict::try_create(&bytes, LEVEL).is_none()
            || zstd::zstd_safe::DDict::try_create(&bytes).is_none()
        {
            return Err(bad("zstd cannot load it"));
        }
        let mut registry = REGISTRY.write().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = registry.get(&id) {
            return if d.bytes == bytes {
                Ok(*d)
            } else {
                Err(bad(&format!("two different dictionaries with id {id}")))
            };
        }
        let d: &'static BodyDict = Box::leak(Box::new(BodyDict {
            id,
            enc: zstd::dict::EncoderDictionary::copy(&bytes, LEVEL),
            dec: zstd::dict::DecoderDictionary::copy(&bytes),
            bytes,
        }));
        registry.insert(id, d);
        Ok(d)
    }
}

impl PartialEq for BodyDict {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for BodyDict {}

impl std::fmt::Debug for BodyDict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BodyDict({}, {} bytes)", self.id, self.bytes.len())
    }
}

/// The start of a zstd dictionary (RFC 8878 §5); its id follows, 4 bytes little-endian.
const DICT_MAGIC: [u8; 4] = [0x37, 0xa4, 0x30, 0xec];

static REGISTRY: LazyLock<RwLock<HashMap<u32, &'static BodyDict>>> =
    LazyLock::new(|| RwLock::new(HashMap::new()));

/// The registered dictionary with this id.
pub(crate) fn lookup(id: u32) -> Option<&'static BodyDict> {
    REGISTRY
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .get(&id)
        .copied()
}

/// Size of a learned dictionary: larger ones compressed CARIN data a little better but more slowly.
const DICT_BYTES: usize = 64 * 1024;
/// Fewer samples than this teach too little to be worth a dictionary.
pub const MIN_DICT_SAMPLES: usize = 500;
/// Training reads at most this much (the time it takes grows with it).
const MAX_TRAINING_BYTES: usize = 16 << 20;

/// Learns a dictionary from `samples` (texts of resources of one type) and registers it;
/// `None` when there are too few samples or zstd cannot learn from them (the store then goes on
/// compressing without one).
pub fn learn_dictionary(samples: &[&str]) -> Option<&'static BodyDict> {
    if samples.len() < MIN_DICT_SAMPLES {
        return None;
    }
    let mut taken: Vec<&[u8]> = Vec::new();
    let mut total = 0;
    for s in samples {
        if total + s.len() > MAX_TRAINING_BYTES {
            break;
        }
        total += s.len();
        taken.push(s.as_bytes());
    }
    let mut bytes = zstd::dict::from_samples(&taken, DICT_BYTES).ok()?;
    if bytes.len() < 8 || bytes[..4] != DICT_MAGIC {
        return None;
    }
    // zstd picks a random id; ours is derived from the content, in the range RFC 8878 leaves to
    // private use, so the same dictionary always has the same id.
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes[8..].hash(&mut h);
    let id = (h.finish() as u32 & 0x7fff_ffff) | 0x8000;
    bytes[4..8].copy_from_slice(&id.to_le_bytes());
    BodyDict::register(bytes).ok()
}

/// The value to store for `json`, a resource of type `rt`.
pub(crate) fn encode(
    encoding: BodyEncoding,
    rt: ResourceType,
    json: String,
) -> Result<Bind, StoreError> {
    Ok(match encoding {
        BodyEncoding::Text => Bind::Text(json),
        BodyEncoding::Zstd(dicts) => Bind::Blob(compress(&json, dicts.get(rt))?),
    })
}

/// zstd's fastest level: an EOB compresses ~4.7x at several hundred MB/s (~17x and three times as
/// fast with a learned dictionary).
const LEVEL: i32 = 1;

/// Largest text a stored frame may expand to: the largest accepted resource plus the `meta` the store
/// splices in.
const MAX_BODY_BYTES: u64 = MAX_RESOURCE_BYTES as u64 + 64 * 1024;

thread_local! {
    // Contexts per thread: creating one per call costs more than compressing or decompressing an EOB
    // (zstd allocates its windows with the C allocator, which maps and unmaps them each time). Those
    // for dictionaries are pointed at the frame's dictionary before each use (a pointer assignment).
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DICT_COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> = const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
    static DICT_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> = const { RefCell::new(None) };
}

fn zstd_error(e: std::io::Error) -> StoreError {
    StoreError::Database(format!("zstd: {e}"))
}

/// The stored form of `json`, with `dict` if given.
pub(crate) fn compress(json: &str, dict: Option<&'static BodyDict>) -> Result<Vec<u8>, StoreError> {
    let cell = if dict.is_some() {
        &DICT_COMPRESSOR
    } else {
        &COMPRESSOR
    };
    cell.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(LEVEL).map_err(zstd_error)?);
        }
        let c = c.as_mut().expect("set above");
        if let Some(d) = dict {
            c.set_prepared_dictionary(&d.enc).map_err(zstd_error)?;
        }
        c.compress(json.as_bytes()).map_err(zstd_error)
    })
}

/// The id of the dictionary a stored frame needs, if any.
pub(crate) fn frame_dictionary(frame: &[u8]) -> Option<u32> {
    zstd::zstd_safe::get_dict_id_from_frame(frame).map(|id| id.get())
}

/// The text of a stored frame. The frame's declared size is checked before anything is allocated, so a
/// damaged row cannot make the store allocate more than a resource may be. A frame's dictionary must
/// have been registered (the store loads those its rows name).
pub(crate) fn decompress(frame: &[u8]) -> Result<String, StoreError> {
    let corrupt = |why: &str| StoreError::Corrupt(format!("stored resource: {why}"));
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(n)) if n <= MAX_BODY_BYTES => n as usize,
        Ok(Some(_)) => return Err(corrupt("too large")),
        _ => return Err(corrupt("not a zstd frame with its size")),
    };
    let dict = match frame_dictionary(frame) {
        None => None,
        Some(id) => Some(lookup(id).ok_or_else(|| corrupt(&format!("unknown dictionary {id}")))?),
    };
    let cell = if dict.is_some() {
        &DICT_DECOMPRESSOR
    } else {
        &DECOMPRESSOR
    };
    let bytes = cell.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| corrupt(&e.to_string()))?);
        }
        let d = d.as_mut().expect("set above");
        if let Some(dict) = dict {
            d.set_prepared_dictionary(&dict.dec)
                .map_err(|e| corrupt(&e.to_string()))?;
        }
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
            let frame = compress(text, None).unwrap();
            assert_eq!(decompress(&frame).unwrap(), text);
        }
        let big = r#"{"resourceType":"ExplanationOfBenefit","item":["#.to_owned()
            + &r#"{"productOrService":{"coding":[{"system":"http://www.ama-assn.org/go/cpt","code":"99213"}]}},"#.repeat(200)
            + "0]}";
        let frame = compress(&big, None).unwrap();
        assert!(
            frame.len() * 4 < big.len(),
            "{} of {}",
            frame.len(),
            big.len()
        );
        assert_eq!(decompress(&frame).unwrap(), big);
    }

    #[test]
    fn damaged_dictionaries_are_refused_not_panicked_on() {
        assert!(BodyDict::register(Vec::new()).is_err());
        assert!(BodyDict::register(b"not a dictionary at all".to_vec()).is_err());
        // The magic and an id, then garbage where the entropy tables should be.
        let mut bytes = DICT_MAGIC.to_vec();
        bytes.extend_from_slice(&0x1234_5678u32.to_le_bytes());
        bytes.extend(std::iter::repeat_n(0xffu8, 300));
        assert!(BodyDict::register(bytes).is_err());
        // A zero id.
        let mut bytes = DICT_MAGIC.to_vec();
        bytes.extend_from_slice(&[0; 4]);
        assert!(BodyDict::register(bytes).is_err());
    }

    #[test]
    fn learned_dictionaries_round_trip_and_name_themselves() {
        let samples: Vec<String> = (0..MIN_DICT_SAMPLES)
            .map(|i| {
                format!(
                    r#"{{"resourceType":"Coverage","id":"c{i}","status":"active","subscriberId":"S{:08}","beneficiary":{{"reference":"Patient/p{i}"}},"payor":[{{"reference":"Organization/payer-{}"}}],"class":[{{"type":{{"coding":[{{"system":"http://terminology.hl7.org/CodeSystem/coverage-class","code":"group"}}]}},"value":"G{}"}}]}}"#,
                    i * 31,
                    i % 7,
                    i % 13
                )
            })
            .collect();
        let refs: Vec<&str> = samples.iter().map(String::as_str).collect();
        assert!(
            learn_dictionary(&refs[..MIN_DICT_SAMPLES - 1]).is_none(),
            "too few"
        );
        let d = learn_dictionary(&refs).expect("learned");
        assert!(d.id() >= 0x8000);
        // Registering the same bytes again gives the same dictionary.
        assert_eq!(BodyDict::register(d.bytes().to_vec()).unwrap(), d);
        for text in [refs[3], "{}", ""] {
            let frame = compress(text, Some(d)).unwrap();
            assert_eq!(frame_dictionary(&frame), Some(d.id()));
            assert_eq!(decompress(&frame).unwrap(), text);
        }
        let with = compress(refs[7], Some(d)).unwrap();
        let without = compress(refs[7], None).unwrap();
        assert!(
            with.len() * 2 < without.len(),
            "{} vs {}",
            with.len(),
            without.len()
        );
        assert_eq!(frame_dictionary(&without), None);
    }

    #[test]
    fn damaged_frames_are_refused() {
        let frame = compress(r#"{"resourceType":"Patient","id":"p"}"#, None).unwrap();
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
