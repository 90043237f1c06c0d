//! Benchmark only (bench/kafka_peers.py): what the trainer's per-record path costs compiled.
//! A poll's feature and label records are decoded and paired by subject id here, and the pairs
//! come back as CSR arrays (the learner's hashed weight of each name, its CRC-32 masked to the
//! learner's space, and the value), ready for the learner's compiled step: no Python object
//! per record or per feature.
use pyo3::exceptions::PyValueError;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

struct Crc(u32);

impl<'de> Deserialize<'de> for Crc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Crc;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a feature name")
            }
            fn visit_str<E>(self, name: &str) -> Result<Crc, E> {
                Ok(Crc(crc32fast::hash(name.as_bytes())))
            }
        }
        d.deserialize_str(V)
    }
}

struct Hashed(Vec<(u32, f64)>);

impl<'de> Deserialize<'de> for Hashed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Hashed;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object of numbers")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Hashed, A::Error> {
                let mut out = Vec::with_capacity(24);
                while let Some(Crc(hash)) = map.next_key::<Crc>()? {
                    out.push((hash, map.next_value::<f64>()?));
                }
                Ok(Hashed(out))
            }
        }
        d.deserialize_map(V)
    }
}

// The other fields of the records are skipped (serde ignores unknown fields).
#[derive(Deserialize)]
struct FeatureRecord<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    features: Hashed,
}

#[derive(Deserialize)]
struct LabelRecord<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    label: f64,
}

/// Records waiting for their partner, by subject id.
#[pyclass]
struct Pairing {
    features: HashMap<String, Vec<(u32, f64)>>,
    labels: HashMap<String, f64>,
    mask: u32,
}

fn as_bytes<T>(values: &[T]) -> &[u8] {
    // SAFETY: plain numbers, read as their bytes for the length of the slice.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}

#[pymethods]
impl Pairing {
    #[new]
    fn new(dim_log2: u32) -> Self {
        Pairing {
            features: HashMap::new(),
            labels: HashMap::new(),
            mask: (1u32 << dim_log2) - 1,
        }
    }

    /// (cols int64, values float64, indptr int64, labels float64) of the pairs the poll made.
    fn add_poll<'py>(
        &mut self,
        py: Python<'py>,
        messages: &Bound<'py, PyList>,
        features_topic: &str,
    ) -> PyResult<[Bound<'py, PyBytes>; 4]> {
        let mut cols: Vec<i64> = Vec::new();
        let mut values: Vec<f64> = Vec::new();
        let mut indptr: Vec<i64> = vec![0];
        let mut ys: Vec<f64> = Vec::new();
        let mask = self.mask as i64;
        let mut emit = |x: &[(u32, f64)], y: f64| {
            for &(h, v) in x {
                cols.push(h as i64 & mask);
                values.push(v);
            }
            indptr.push(cols.len() as i64);
            ys.push(y);
        };
        for message in messages.iter() {
            if !message.call_method0(intern!(py, "error"))?.is_none() {
                continue;
            }
            let topic = message.call_method0(intern!(py, "topic"))?;
            let is_features = topic.downcast::<PyString>()?.to_str()? == features_topic;
            let value = message.call_method0(intern!(py, "value"))?;
            let bytes = value.downcast::<PyBytes>()?.as_bytes();
            if is_features {
                let r: FeatureRecord = serde_json::from_slice(bytes)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                match self.labels.remove(r.id.as_ref()) {
                    Some(y) => emit(&r.features.0, y),
                    None => {
                        self.features.insert(r.id.into_owned(), r.features.0);
                    }
                }
            } else {
                let r: LabelRecord = serde_json::from_slice(bytes)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                match self.features.remove(r.id.as_ref()) {
                    Some(x) => emit(&x, r.label),
                    None => {
                        self.labels.insert(r.id.into_owned(), r.label);
                    }
                }
            }
        }
        Ok([
            PyBytes::new(py, as_bytes(&cols)),
            PyBytes::new(py, as_bytes(&values)),
            PyBytes::new(py, as_bytes(&indptr)),
            PyBytes::new(py, as_bytes(&ys)),
        ])
    }
}

#[pymodule]
fn compiled_pairing(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Pairing>()
}
