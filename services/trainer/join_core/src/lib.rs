//! The trainer's per-record path in compiled code: a poll's Kafka messages decoded, paired by
//! subject id and put in their event-time windows, without a Python object per record; the
//! ready batches come back as columns (the learner's hashed features as CSR arrays, the labels,
//! the times and ids, where each record was read). `millrace_trainer.batching.WindowedJoin`
//! is its Python face and says what the rules are.
mod decode;
mod join;

use ahash::AHashMap as HashMap;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};
use sha2::{Digest, Sha256};

use join::{Join, Row, Settings};

/// librdkafka's "reached the end of the partition" event (`KafkaError._PARTITION_EOF`).
const PARTITION_EOF: i64 = -191;

fn as_bytes<T>(values: &[T]) -> &[u8] {
    // SAFETY: plain numbers, read as their bytes for the length of the slice.
    unsafe {
        std::slice::from_raw_parts(values.as_ptr() as *const u8, std::mem::size_of_val(values))
    }
}

fn column<'py, T>(py: Python<'py>, values: &[T]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, as_bytes(values))
}

/// A poll's outcome: records read (undecodable ones included), the undecodable ones as
/// (topic, reason), and the consumer's errors other than end-of-partition events.
type Polled = (usize, Vec<(String, String)>, Vec<PyObject>);

/// A message's partition number.
fn number_of(py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<i64> {
    let number: Option<i64> = message.call_method0(intern!(py, "partition"))?.extract()?;
    Ok(number.unwrap_or(0))
}

#[pyclass(module = "millrace_join_core")]
struct JoinCore {
    join: Join,
    /// topic -> partition number -> the join's partition.
    parts: HashMap<String, HashMap<i64, u32>>,
}

impl JoinCore {
    fn part_of(&mut self, topic: &str, number: i64) -> u32 {
        if let Some(&part) = self
            .parts
            .get(topic)
            .and_then(|numbers| numbers.get(&number))
        {
            return part;
        }
        let part = self.join.part(&format!("{topic}/{number}"));
        self.parts
            .entry(topic.to_owned())
            .or_default()
            .insert(number, part);
        part
    }

    /// Decode and join one record; the reason it is undecodable otherwise.
    fn add(&mut self, is_features: bool, value: &[u8], part: u32, offset: i64) -> Option<String> {
        let outcome = if is_features {
            decode::features(value).map(|record| self.join.add_features(part, offset, record))
        } else {
            decode::label(value).map(|record| self.join.add_label(part, offset, record))
        };
        match outcome {
            Ok(()) => {
                self.join.touched(part);
                None
            }
            Err(reason) => Some(reason),
        }
    }
}

#[pymethods]
impl JoinCore {
    #[new]
    #[pyo3(signature = (*, window_ms, label_wait_ms, batch_samples, idle_ms, max_waiting))]
    fn new(
        window_ms: i64,
        label_wait_ms: i64,
        batch_samples: Option<usize>,
        idle_ms: Option<f64>,
        max_waiting: Option<usize>,
    ) -> PyResult<Self> {
        if window_ms < 1 {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "window_ms must be positive",
            ));
        }
        let settings = Settings {
            window_ms,
            label_wait_ms,
            batch_samples,
            idle_ms,
            max_waiting,
        };
        Ok(JoinCore {
            join: Join::new(settings),
            parts: HashMap::new(),
        })
    }

    fn assign(&mut self, names: Vec<String>) {
        self.join.assign(&names);
    }

    /// Decode and join a poll's messages in the order they were read (``now``: the wall-clock
    /// time of its end-of-partition events).
    fn add_poll(
        &mut self,
        py: Python<'_>,
        messages: &Bound<'_, PyAny>,
        features_topic: &str,
        now: f64,
    ) -> PyResult<Polled> {
        let (mut read, mut undecodable, mut errors) = (0, Vec::new(), Vec::new());
        for message in messages.try_iter()? {
            let message = message?;
            let error = message.call_method0(intern!(py, "error"))?;
            let topic = message.call_method0(intern!(py, "topic"))?;
            if !error.is_none() {
                let code: i64 = error.call_method0(intern!(py, "code"))?.extract()?;
                if code == PARTITION_EOF {
                    let topic = topic.downcast::<PyString>()?.to_str()?;
                    let part = self.part_of(topic, number_of(py, &message)?);
                    self.join.reached_end(part, now);
                } else {
                    errors.push(error.unbind());
                }
                continue;
            }
            let topic = topic.downcast::<PyString>()?.to_str()?;
            let number = number_of(py, &message)?;
            let offset: Option<i64> = message.call_method0(intern!(py, "offset"))?.extract()?;
            let offset = offset.unwrap_or(0);
            let part = self.part_of(topic, number);
            self.join.parts[part as usize].last_offset = Some(offset);
            read += 1;
            let value = message.call_method0(intern!(py, "value"))?;
            let bytes = if value.is_none() {
                &[][..]
            } else {
                value.downcast::<PyBytes>()?.as_bytes()
            };
            if let Some(reason) = self.add(topic == features_topic, bytes, part, offset) {
                undecodable.push((topic.to_owned(), reason));
            }
        }
        Ok((read, undecodable, errors))
    }

    /// One record's bytes read at ``offset`` of ``partition``; the reason it is undecodable,
    /// or None.
    fn add_record(
        &mut self,
        is_features: bool,
        value: &[u8],
        partition: &str,
        offset: i64,
    ) -> Option<String> {
        let part = self.join.part(partition);
        self.join.parts[part as usize].last_offset = Some(offset);
        self.add(is_features, value, part, offset)
    }

    fn reached_end(&mut self, partition: &str, now: f64) {
        let part = self.join.part(partition);
        self.join.reached_end(part, now);
    }

    fn watermark(&mut self, now: f64) -> Option<i64> {
        self.join.watermark(now)
    }

    fn watermark_without_idle(&self) -> Option<i64> {
        self.join.watermark_without_idle()
    }

    /// The ready batches, oldest first: all their samples, in order, and each batch's
    /// (start, end, first sample, end of its samples).
    fn ready(&mut self, now: f64) -> (Rows, Vec<(i64, i64, usize, usize)>) {
        let names: Vec<String> = self.join.parts.iter().map(|p| p.name.clone()).collect();
        let ready = self.join.ready(now);
        let (mut rows, mut bounds) = (Vec::new(), Vec::with_capacity(ready.len()));
        for batch in ready {
            let first = rows.len();
            rows.extend(batch.rows);
            bounds.push((batch.start, batch.end, first, rows.len()));
        }
        (Rows { rows, names }, bounds)
    }

    /// (partition, watermark) of each partition that went idle since the last call.
    fn take_idle_events(&mut self) -> Vec<(String, Option<i64>)> {
        let events = std::mem::take(&mut self.join.idle_events);
        let parts = &self.join.parts;
        events
            .into_iter()
            .map(|(p, w)| (parts[p as usize].name.clone(), w))
            .collect()
    }

    fn idle(&self) -> Vec<String> {
        self.join
            .parts
            .iter()
            .filter(|p| p.idle)
            .map(|p| p.name.clone())
            .collect()
    }

    #[getter]
    fn late(&self) -> u64 {
        self.join.late
    }

    #[getter]
    fn expired(&self) -> u64 {
        self.join.expired
    }

    #[getter]
    fn evicted(&self) -> u64 {
        self.join.evicted
    }

    /// (feature records, labels) waiting for their partner.
    fn waiting(&self) -> (usize, usize) {
        self.join.waiting()
    }

    fn last_offsets(&self) -> Vec<(String, i64)> {
        let parts = self.join.parts.iter();
        parts
            .filter_map(|p| p.last_offset.map(|o| (p.name.clone(), o)))
            .collect()
    }

    /// (partition, newest, consumed, replay until, newest at the checkpoint) of each.
    #[allow(clippy::type_complexity)]
    fn progress(&self) -> Vec<(String, Option<i64>, Option<i64>, Option<i64>, Option<i64>)> {
        let parts = self.join.parts.iter();
        parts
            .map(|p| {
                (
                    p.name.clone(),
                    p.newest,
                    p.consumed,
                    p.replay_until,
                    p.replay_newest,
                )
            })
            .collect()
    }

    #[getter]
    fn learned_until(&self) -> Option<i64> {
        self.join.learned_until
    }

    #[getter]
    fn resume_from(&self) -> Option<(i64, String)> {
        self.join.resume_from.clone()
    }

    fn pending_first(&self) -> Option<(i64, i64, String)> {
        self.join
            .pending_first()
            .map(|(w, ts, id)| (w, ts, id.to_owned()))
    }

    fn needed_offsets(&self) -> Vec<(String, i64)> {
        let parts = &self.join.parts;
        let needed = self.join.needed_offsets().into_iter();
        needed
            .map(|(p, offset)| (parts[p as usize].name.clone(), offset))
            .collect()
    }

    /// Continue after a checkpoint: its counters, and per partition (name, the offset the
    /// consumer resumes at, the consumed position at the checkpoint, its newest event time).
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (learned_until, resume_from, late, expired, evicted, partitions))]
    fn restore(
        &mut self,
        learned_until: Option<i64>,
        resume_from: Option<(i64, String)>,
        late: u64,
        expired: u64,
        evicted: u64,
        partitions: Vec<(String, i64, i64, Option<i64>)>,
    ) {
        let join = &mut self.join;
        (join.learned_until, join.resume_from) = (learned_until, resume_from);
        (join.late, join.expired, join.evicted) = (late, expired, evicted);
        for (name, start, until, newest) in partitions {
            let part = join.part(&name);
            let p = &mut join.parts[part as usize];
            p.consumed = Some(start);
            if start < until {
                (p.replay_until, p.replay_newest) = (Some(until), newest);
            } else if newest.is_some() {
                p.newest = newest;
            }
        }
    }
}

/// Ready batches' samples, in their learned order, as columns; each method reads the samples
/// ``lo:hi``.
#[pyclass(module = "millrace_join_core", frozen)]
struct Rows {
    rows: Vec<Row>,
    /// The join's partitions by number, when the batches were made.
    names: Vec<String>,
}

impl Rows {
    fn range(&self, lo: usize, hi: usize) -> PyResult<&[Row]> {
        self.rows
            .get(lo..hi)
            .ok_or_else(|| pyo3::exceptions::PyIndexError::new_err("sample range out of bounds"))
    }
}

#[pymethods]
impl Rows {
    fn __len__(&self) -> usize {
        self.rows.len()
    }

    /// Labels (float64).
    fn labels<'py>(&self, py: Python<'py>, lo: usize, hi: usize) -> PyResult<Bound<'py, PyBytes>> {
        let labels: Vec<f64> = self.range(lo, hi)?.iter().map(|r| r.label).collect();
        Ok(column(py, &labels))
    }

    /// The features as (weights int64, values float64, entries per row int64): each name's
    /// CRC-32 masked with ``mask``, the learner's hashed index.
    fn hashed<'py>(
        &self,
        py: Python<'py>,
        mask: u32,
        lo: usize,
        hi: usize,
    ) -> PyResult<[Bound<'py, PyBytes>; 3]> {
        let rows = self.range(lo, hi)?;
        let entries: usize = rows.iter().map(|r| r.features.hashes.len()).sum();
        let (mut cols, mut values) = (Vec::with_capacity(entries), Vec::with_capacity(entries));
        let mut lengths = Vec::with_capacity(rows.len());
        for row in rows {
            cols.extend(row.features.hashes.iter().map(|&h| i64::from(h & mask)));
            values.extend_from_slice(&row.features.values);
            lengths.push(row.features.hashes.len() as i64);
        }
        Ok([column(py, &cols), column(py, &values), column(py, &lengths)])
    }

    /// Where each sample's two records were read: (partitions, offsets), int64, the feature
    /// records' then the labels'; a partition is its place in ``partitions()``.
    fn places<'py>(
        &self,
        py: Python<'py>,
        lo: usize,
        hi: usize,
    ) -> PyResult<[Bound<'py, PyBytes>; 2]> {
        let rows = self.range(lo, hi)?;
        let (mut at, mut offsets) = (Vec::with_capacity(2 * rows.len()), Vec::new());
        offsets.reserve(2 * rows.len());
        for r in rows {
            at.push(i64::from(r.features_part));
            offsets.push(r.features_offset);
        }
        for r in rows {
            at.push(i64::from(r.label_part));
            offsets.push(r.label_offset);
        }
        Ok([column(py, &at), column(py, &offsets)])
    }

    fn partitions(&self) -> Vec<String> {
        self.names.clone()
    }

    /// The lineage's chained digest after each batch of ``bounds`` (``lo, hi`` pairs) in turn,
    /// from ``previous``: the SHA-256 of the previous digest's hex and the batch's
    /// ``"\x1e".join(f"{ts}\x1f{id}")`` (``millrace_trainer.lineage.chain_digest``).
    fn chain_digest(&self, previous: &str, bounds: Vec<(usize, usize)>) -> PyResult<String> {
        let mut digest = previous.to_owned();
        let mut text = String::new();
        for (lo, hi) in bounds {
            text.clear();
            for (k, row) in self.range(lo, hi)?.iter().enumerate() {
                if k > 0 {
                    text.push('\x1e');
                }
                text.push_str(&row.ts.to_string());
                text.push('\x1f');
                text.push_str(&row.id);
            }
            let hash = Sha256::new()
                .chain_update(digest.as_bytes())
                .chain_update(text.as_bytes());
            digest = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
        }
        Ok(digest)
    }

    /// Sample ``k``: (id, time, its features' JSON object, label, feature partition, offset,
    /// label partition, offset).
    #[allow(clippy::type_complexity)]
    fn row(&self, k: usize) -> PyResult<(&str, i64, &str, f64, &str, i64, &str, i64)> {
        let r = &self.range(k, k + 1)?[0];
        let names = &self.names;
        Ok((
            &r.id,
            r.ts,
            &r.features.raw,
            r.label,
            &names[r.features_part as usize],
            r.features_offset,
            &names[r.label_part as usize],
            r.label_offset,
        ))
    }
}

#[pymodule]
fn millrace_join_core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<JoinCore>()?;
    m.add_class::<Rows>()
}
