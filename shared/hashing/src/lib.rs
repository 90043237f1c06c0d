//! The hashed learners' encoding in compiled code: feature dicts to each name's weight (its
//! CRC-32, as `zlib.crc32` of its UTF-8, masked to the learner's space) and value, without a
//! Python call per name (`millrace.learners.logreg.LogisticRegression.encode_many`).
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyString};

fn as_bytes<T>(values: &[T]) -> &[u8] {
    // SAFETY: plain numbers, read as their bytes for the length of the slice.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}

/// (weights int64, values float64, entries per row int64) of ``features``, a sequence of dicts
/// of name -> number, in each dict's order.
#[pyfunction]
fn hash_features<'py>(
    py: Python<'py>,
    features: &Bound<'py, PyAny>,
    mask: u32,
) -> PyResult<[Bound<'py, PyBytes>; 3]> {
    let (mut cols, mut values, mut lengths) = (Vec::new(), Vec::new(), Vec::new());
    for row in features.try_iter()? {
        let row = row?;
        let row = row.downcast::<PyDict>()?;
        lengths.push(row.len() as i64);
        for (name, value) in row.iter() {
            let name = name.downcast::<PyString>()?.to_str()?;
            cols.push(i64::from(crc32fast::hash(name.as_bytes()) & mask));
            values.push(value.extract::<f64>()?);
        }
    }
    Ok([
        PyBytes::new(py, as_bytes(&cols)),
        PyBytes::new(py, as_bytes(&values)),
        PyBytes::new(py, as_bytes(&lengths)),
    ])
}

#[pymodule]
fn millrace_hashing(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(hash_features, m)?)
}
