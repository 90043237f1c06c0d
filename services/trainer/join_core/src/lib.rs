//! The trainer's per-record path in compiled code: a poll's Kafka messages decoded, paired by
//! subject id and put in their event-time windows, without a Python object per record; the
//! ready batches come back as columns (the learner's hashed features as CSR arrays, the labels,
//! the times and ids, where each record was read). `millrace_trainer.batching.WindowedJoin`
//! is its Python face and says what the rules are.
mod decode;
mod join;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use std::collections::HashMap;

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

/// A message's topic and partition number.
fn place(py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<(String, i64)> {
    let topic = message.call_method0(intern!(py, "topic"))?;
    let number: Option<i64> = message.call_method0(intern!(py, "partition"))?.extract()?;
    Ok((
        topic.downcast::<PyString>()?.to_str()?.to_owned(),
        number.unwrap_or(0),
    ))
}

#[pyclass(module = "millrace_join_core")]
struct JoinCore {
    join: Join,
    /// (topic, partition number) -> the join's partition.
    parts: HashMap<(String, i64), u32>,
}

impl JoinCore {
    fn part_of(&mut self, topic: &str, number: i64) -> u32 {
        if let Some(&part) = self.parts.get(&(topic.to_owned(), number)) {
            return part;
        }
        let part = self.join.part(&format!("{topic}/{number}"));
        self.parts.insert((topic.to_owned(), number), part);
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
            if !error.is_none() {
                let code: i64 = error.call_method0(intern!(py, "code"))?.extract()?;
                if code == PARTITION_EOF {
                    let (topic, number) = place(py, &message)?;
                    let part = self.part_of(&topic, number);
                    self.join.reached_end(part, now);
                } else {
                    errors.push(error.unbind());
                }
                continue;
            }
            let (topic, number) = place(py, &message)?;
            let offset: Option<i64> = message.call_method0(intern!(py, "offset"))?.extract()?;
            let offset = offset.unwrap_or(0);
            let part = self.part_of(&topic, number);
            self.join.parts[part as usize].last_offset = Some(offset);
            read += 1;
            let value = message.call_method0(intern!(py, "value"))?;
            let bytes = if value.is_none() {
                &[][..]
            } else {
                value.downcast::<PyBytes>()?.as_bytes()
            };
            if let Some(reason) = self.add(topic == features_topic, bytes, part, offset) {
                undecodable.push((topic, reason));
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

    /// (start, end, samples) of each ready batch, oldest first.
    fn ready(&mut self, now: f64) -> Vec<(i64, i64, Rows)> {
        let names: Vec<String> = self.join.parts.iter().map(|p| p.name.clone()).collect();
        let ready = self.join.ready(now);
        (ready.into_iter())
            .map(|r| {
                (
                    r.start,
                    r.end,
                    Rows {
                        rows: r.rows,
                        names: names.clone(),
                    },
                )
            })
            .collect()
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

/// A batch's samples, in their learned order, as columns.
#[pyclass(module = "millrace_join_core", frozen)]
struct Rows {
    rows: Vec<Row>,
    /// The join's partitions by number, when the batch was made.
    names: Vec<String>,
}

#[pymethods]
impl Rows {
    fn __len__(&self) -> usize {
        self.rows.len()
    }

    fn ids<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.rows.iter().map(|r| r.id.as_str()))
    }

    /// Event times (int64).
    fn times<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        column(py, &self.rows.iter().map(|r| r.ts).collect::<Vec<i64>>())
    }

    /// Labels (float64).
    fn labels<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        column(py, &self.rows.iter().map(|r| r.label).collect::<Vec<f64>>())
    }

    /// The features as (weights int64, values float64, entries per row int64): each name's
    /// CRC-32 masked to ``mask``, the learner's hashed index.
    fn hashed<'py>(&self, py: Python<'py>, mask: u32) -> [Bound<'py, PyBytes>; 3] {
        let entries: usize = self.rows.iter().map(|r| r.features.hashes.len()).sum();
        let (mut cols, mut values) = (Vec::with_capacity(entries), Vec::with_capacity(entries));
        let mut lengths = Vec::with_capacity(self.rows.len());
        for row in &self.rows {
            cols.extend(row.features.hashes.iter().map(|&h| i64::from(h & mask)));
            values.extend_from_slice(&row.features.values);
            lengths.push(row.features.hashes.len() as i64);
        }
        [column(py, &cols), column(py, &values), column(py, &lengths)]
    }

    /// Where each sample's records were read: (feature partitions, feature offsets, label
    /// partitions, label offsets), all int64; a partition is its place in ``partitions()``.
    fn places<'py>(&self, py: Python<'py>) -> [Bound<'py, PyBytes>; 4] {
        let of = |f: fn(&Row) -> i64| self.rows.iter().map(f).collect::<Vec<i64>>();
        [
            column(py, &of(|r| i64::from(r.features_part))),
            column(py, &of(|r| r.features_offset)),
            column(py, &of(|r| i64::from(r.label_part))),
            column(py, &of(|r| r.label_offset)),
        ]
    }

    fn partitions(&self) -> Vec<String> {
        self.names.clone()
    }

    /// ``"\x1e".join(f"{ts}\x1f{id}")`` over the samples: what the lineage's digest reads.
    fn digest_text<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        let mut text = String::with_capacity(self.rows.len() * 24);
        for (k, row) in self.rows.iter().enumerate() {
            if k > 0 {
                text.push('\x1e');
            }
            text.push_str(&row.ts.to_string());
            text.push('\x1f');
            text.push_str(&row.id);
        }
        PyBytes::new(py, text.as_bytes())
    }

    /// Sample ``k``: (id, time, its features' JSON object, label, feature partition, offset,
    /// label partition, offset).
    #[allow(clippy::type_complexity)]
    fn row(&self, k: usize) -> PyResult<(&str, i64, &str, f64, &str, i64, &str, i64)> {
        let r = self
            .rows
            .get(k)
            .ok_or_else(|| pyo3::exceptions::PyIndexError::new_err("sample index out of range"))?;
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
