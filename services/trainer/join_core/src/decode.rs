//! The two record formats (`millrace.records`), decoded with the same rules as the trainer's
//! msgspec decoders: the same required fields and types, unknown fields ignored. A feature
//! record's features come out as each name's CRC-32 and value, in the record's order, and
//! the raw JSON of the object, kept for whoever reads the names (River, the lazy samples).
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

pub struct FeatureRecord {
    pub id: String,
    pub ts: i64,
    pub hashes: Vec<u32>,
    pub values: Vec<f64>,
    pub raw: Box<str>,
}

pub struct LabelRecord {
    pub id: String,
    pub ts: i64,
    pub label: f64,
}

/// A string, borrowed from the input where it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

impl Default for Text<'_> {
    fn default() -> Self {
        Text(Cow::Borrowed(""))
    }
}

/// An object of numbers, as (name, value) in its order.
struct Named<'a>(Vec<(Text<'a>, f64)>);

impl<'de> Deserialize<'de> for Named<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Named<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Named<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(24));
                while let Some((name, value)) = map.next_entry::<Text<'de>, f64>()? {
                    out.push((name, value));
                }
                Ok(Named(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// An object of numbers, as each name's CRC-32 and its value, in its order.
struct Hashed(Vec<u32>, Vec<f64>);

impl<'de> Deserialize<'de> for Hashed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Hashed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Hashed, A::Error> {
                let (mut hashes, mut values) = (Vec::with_capacity(24), Vec::with_capacity(24));
                while let Some(name) = map.next_key::<Text<'de>>()? {
                    hashes.push(crc32fast::hash(name.0.as_bytes()));
                    values.push(map.next_value::<f64>()?);
                }
                Ok(Hashed(hashes, values))
            }
        }
        d.deserialize_map(V)
    }
}

// Field names as the records spell them; those only validated are read and dropped.
#[derive(Deserialize)]
struct FeatureWire<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow, rename = "key")]
    _key: Text<'a>,
    ts: i64,
    #[serde(borrow)]
    features: &'a RawValue,
    #[serde(borrow, default, rename = "event_id")]
    _event_id: Text<'a>,
    #[serde(borrow, default, rename = "feature_schema")]
    _feature_schema: Text<'a>,
    #[serde(borrow, default, rename = "schema")]
    _schema: Text<'a>,
}

#[derive(Deserialize)]
struct LabelWire<'a> {
    #[serde(borrow)]
    id: Text<'a>,
    #[serde(borrow, rename = "key")]
    _key: Text<'a>,
    ts: i64,
    label: f64,
    #[serde(borrow, default, rename = "event_id")]
    _event_id: Text<'a>,
    #[serde(borrow, default, rename = "schema")]
    _schema: Text<'a>,
}

pub fn features(bytes: &[u8]) -> Result<FeatureRecord, String> {
    let wire: FeatureWire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let raw = wire.features.get();
    let Hashed(mut hashes, mut values) =
        serde_json::from_str(raw).map_err(|e| format!("features: {e}"))?;
    if has_repeats(&hashes) {
        let Named(named) = serde_json::from_str(raw).map_err(|e| format!("features: {e}"))?;
        (hashes, values) = last_value_first_place(&named);
    }
    Ok(FeatureRecord {
        id: wire.id.0.into_owned(),
        ts: wire.ts,
        hashes,
        values,
        raw: raw.into(),
    })
}

pub fn label(bytes: &[u8]) -> Result<LabelRecord, String> {
    let wire: LabelWire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    Ok(LabelRecord {
        id: wire.id.0.into_owned(),
        ts: wire.ts,
        label: wire.label,
    })
}

fn has_repeats(hashes: &[u32]) -> bool {
    let mut on_stack = [0u32; 32];
    let mut on_heap = Vec::new();
    let sorted = if hashes.len() <= on_stack.len() {
        on_stack[..hashes.len()].copy_from_slice(hashes);
        &mut on_stack[..hashes.len()]
    } else {
        on_heap.extend_from_slice(hashes);
        &mut on_heap[..]
    };
    sorted.sort_unstable();
    sorted.windows(2).any(|w| w[0] == w[1])
}

/// A name given twice keeps its first place and its last value, as a dict decodes it (the
/// path taken only when two hashes are equal: a repeated name or a CRC collision).
fn last_value_first_place(named: &[(Text, f64)]) -> (Vec<u32>, Vec<f64>) {
    let mut place: HashMap<&str, usize> = HashMap::new();
    let (mut hashes, mut values) = (Vec::new(), Vec::new());
    for (name, value) in named {
        match place.get(name.0.as_ref()) {
            Some(&k) => values[k] = *value,
            None => {
                place.insert(name.0.as_ref(), hashes.len());
                hashes.push(crc32fast::hash(name.0.as_bytes()));
                values.push(*value);
            }
        }
    }
    (hashes, values)
}
