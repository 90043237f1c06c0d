//! The windowed join's state and rules (the module text of `millrace_trainer.batching` says
//! what they are and why): pairing by id, the bounded buffer, window assignment, lateness,
//! replay after a restore, expiry, idle partitions and batches by count.
use ahash::AHashMap as HashMap;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::decode::{FeatureRecord, LabelRecord};

pub struct Features {
    pub hashes: Vec<u32>,
    pub values: Vec<f64>,
    pub raw: Box<str>,
}

enum Body {
    Features(Features),
    Label(f64),
}

struct Held {
    ts: i64,
    part: u32,
    offset: i64,
    replayed: bool,
    body: Body,
}

/// A joined sample and where its two records were read.
pub struct Row {
    pub id: String,
    pub ts: i64,
    pub features: Features,
    pub label: f64,
    pub features_part: u32,
    pub features_offset: i64,
    pub label_part: u32,
    pub label_offset: i64,
}

#[derive(Default)]
pub struct Part {
    pub name: String,
    pub assigned: bool,
    /// The newest event time seen, and the offset after the last record (consumed position).
    pub newest: Option<i64>,
    pub consumed: Option<i64>,
    /// After a restore: offsets below `replay_until` are read again; `replay_newest` is the
    /// newest event time at the checkpoint, taken back once they are.
    pub replay_until: Option<i64>,
    pub replay_newest: Option<i64>,
    /// The offset of the last record read, by this process (undecodable ones included).
    pub last_offset: Option<i64>,
    /// (when it reached its end offset, the order it did so in)
    at_end_since: Option<(f64, u64)>,
    pub idle: bool,
}

/// Records waiting for a partner by id, oldest arrival first out when over the limit. Each
/// waiting record has a number (`seq`): its place in that order, and its name in the expiry
/// heap (no copy of its id there).
#[derive(Default)]
struct Side {
    held: HashMap<String, (u64, Held)>,
    order: BTreeMap<u64, String>,
    next: u64,
}

impl Side {
    fn take(&mut self, key: &str) -> Option<Held> {
        let (seq, held) = self.held.remove(key)?;
        self.order.remove(&seq);
        Some(held)
    }

    /// Wait under `key` (a key waiting already keeps its place); returns its number, and
    /// whether the oldest left to make room.
    fn wait(&mut self, key: String, held: Held, limit: Option<usize>) -> (u64, bool) {
        let seq = match self.held.get_mut(&key) {
            Some(slot) => {
                slot.1 = held;
                slot.0
            }
            None => {
                self.next += 1;
                self.order.insert(self.next, key.clone());
                self.held.insert(key, (self.next, held));
                self.next
            }
        };
        if limit.is_some_and(|limit| self.held.len() > limit) {
            if let Some((_, oldest)) = self.order.pop_first() {
                self.held.remove(&oldest);
            }
            return (seq, true);
        }
        (seq, false)
    }

    /// The record numbered `seq`, if it still waits and its event time is `ts` (neither
    /// paired nor replaced since), taken out.
    fn take_if(&mut self, seq: u64, ts: i64) -> Option<Held> {
        let key = self.order.get(&seq)?;
        match self.held.get(key) {
            Some((s, held)) if *s == seq && held.ts == ts => {
                let key = self.order.remove(&seq).expect("ordered");
                self.held.remove(&key).map(|(_, held)| held)
            }
            _ => None,
        }
    }
}

pub struct Settings {
    pub window_ms: i64,
    pub label_wait_ms: i64,
    pub batch_samples: Option<usize>,
    pub idle_ms: Option<f64>,
    pub max_waiting: Option<usize>,
}

pub struct Join {
    pub settings: Settings,
    pub parts: Vec<Part>,
    by_name: HashMap<String, u32>,
    left: Side,
    right: Side,
    windows: BTreeMap<i64, Vec<Row>>,
    /// Batches by count: samples handed out, not yet batched, with their window.
    pending: Vec<(Row, i64)>,
    /// (event time, 0 = features | 1 = label, its number) of every waiting record, oldest
    /// first.
    expiry: BinaryHeap<Reverse<(i64, u8, u64)>>,
    pub learned_until: Option<i64>,
    pub resume_from: Option<(i64, String)>,
    pub late: u64,
    pub expired: u64,
    pub evicted: u64,
    /// (partition, the watermark when it left it), to be taken by the caller.
    pub idle_events: Vec<(u32, Option<i64>)>,
    at_end_count: u64,
}

pub struct Ready {
    pub start: i64,
    pub end: i64,
    pub rows: Vec<Row>,
}

impl Join {
    pub fn new(settings: Settings) -> Self {
        Join {
            settings,
            parts: Vec::new(),
            by_name: HashMap::new(),
            left: Side::default(),
            right: Side::default(),
            windows: BTreeMap::new(),
            pending: Vec::new(),
            expiry: BinaryHeap::new(),
            learned_until: None,
            resume_from: None,
            late: 0,
            expired: 0,
            evicted: 0,
            idle_events: Vec::new(),
            at_end_count: 0,
        }
    }

    pub fn part(&mut self, name: &str) -> u32 {
        if let Some(&index) = self.by_name.get(name) {
            return index;
        }
        let index = self.parts.len() as u32;
        self.parts.push(Part {
            name: name.to_owned(),
            ..Part::default()
        });
        self.by_name.insert(name.to_owned(), index);
        index
    }

    pub fn assign(&mut self, names: &[String]) {
        for part in &mut self.parts {
            part.assigned = false;
        }
        for name in names {
            let index = self.part(name);
            self.parts[index as usize].assigned = true;
        }
    }

    pub fn waiting(&self) -> (usize, usize) {
        (self.left.held.len(), self.right.held.len())
    }

    // -- input -------------------------------------------------------------------------------

    /// Data again on `part`: it is no longer at its end, nor idle.
    pub fn touched(&mut self, part: u32) {
        let p = &mut self.parts[part as usize];
        p.at_end_since = None;
        p.idle = false;
    }

    pub fn reached_end(&mut self, part: u32, now: f64) {
        let p = &mut self.parts[part as usize];
        if p.at_end_since.is_none() {
            self.at_end_count += 1;
            p.at_end_since = Some((now, self.at_end_count));
        }
    }

    /// Track a partition's progress; true if the record was consumed before the checkpoint
    /// this join was restored from (it is read again).
    fn progress(&mut self, part: u32, ts: i64, offset: i64) -> bool {
        let p = &mut self.parts[part as usize];
        if p.newest.is_none_or(|newest| ts > newest) {
            p.newest = Some(ts);
        }
        p.consumed = Some(offset + 1);
        let Some(until) = p.replay_until else {
            return false;
        };
        if offset + 1 >= until {
            // Read up to where it was: its newest time at the checkpoint counts again.
            p.replay_until = None;
            let newest = p.replay_newest.take().unwrap_or(ts);
            p.newest = Some(p.newest.map_or(newest, |n| n.max(newest)));
        }
        offset < until
    }

    fn window_start(&self, ts: i64) -> i64 {
        ts - ts.rem_euclid(self.settings.window_ms)
    }

    pub fn add_features(&mut self, part: u32, offset: i64, record: FeatureRecord) {
        let replayed = self.progress(part, record.ts, offset);
        if self
            .learned_until
            .is_some_and(|learned| self.window_start(record.ts) < learned)
        {
            self.late += u64::from(!replayed); // its window is learned already
            return;
        }
        let features = Features {
            hashes: record.hashes,
            values: record.values,
            raw: record.raw,
        };
        let held = Held {
            ts: record.ts,
            part,
            offset,
            replayed,
            body: Body::Features(features),
        };
        match self.right.take(&record.id) {
            Some(label) => self.pair(record.id, held, label),
            None => self.wait(0, record.id, held),
        }
    }

    pub fn add_label(&mut self, part: u32, offset: i64, record: LabelRecord) {
        let replayed = self.progress(part, record.ts, offset);
        let held = Held {
            ts: record.ts,
            part,
            offset,
            replayed,
            body: Body::Label(record.label),
        };
        match self.left.take(&record.id) {
            Some(features) => self.pair(record.id, features, held),
            None => self.wait(1, record.id, held),
        }
    }

    fn wait(&mut self, kind: u8, id: String, held: Held) {
        let ts = held.ts;
        let limit = self.settings.max_waiting;
        let side = if kind == 0 {
            &mut self.left
        } else {
            &mut self.right
        };
        let (seq, evicted) = side.wait(id, held, limit);
        self.evicted += u64::from(evicted);
        self.expiry.push(Reverse((ts, kind, seq)));
    }

    /// A sample, in its window unless its label came too late.
    fn pair(&mut self, id: String, features: Held, label: Held) {
        let start = self.window_start(features.ts);
        if label.ts > start + self.settings.window_ms + self.settings.label_wait_ms {
            // Decided before the checkpoint if both were read before it.
            self.late += u64::from(!(features.replayed && label.replayed));
            return;
        }
        let (Body::Features(x), Body::Label(y)) = (features.body, label.body) else {
            unreachable!("a pair is a feature record and a label")
        };
        let row = Row {
            id,
            ts: features.ts,
            features: x,
            label: y,
            features_part: features.part,
            features_offset: features.offset,
            label_part: label.part,
            label_offset: label.offset,
        };
        self.windows.entry(start).or_default().push(row);
    }

    // -- output ------------------------------------------------------------------------------

    pub fn watermark(&mut self, now: f64) -> Option<i64> {
        if self.settings.idle_ms.is_some() {
            self.update_idle(now);
        }
        let mut active = self
            .parts
            .iter()
            .filter(|p| p.assigned && !p.idle)
            .peekable();
        active.peek()?;
        active
            .map(|p| p.newest)
            .try_fold(i64::MAX, |low, newest| Some(low.min(newest?)))
    }

    pub fn watermark_without_idle(&self) -> Option<i64> {
        self.parts
            .iter()
            .filter(|p| p.assigned)
            .filter_map(|p| p.newest)
            .min()
    }

    fn update_idle(&mut self, now: f64) {
        let idle_ms = self.settings.idle_ms.unwrap_or(0.0);
        let mut at_end: Vec<(u64, u32)> = (self.parts.iter().enumerate())
            .filter_map(|(i, p)| p.at_end_since.map(|(_, order)| (order, i as u32)))
            .collect();
        at_end.sort_unstable();
        for (_, index) in at_end {
            let p = &self.parts[index as usize];
            let (since, _) = p.at_end_since.expect("at its end");
            if p.assigned && !p.idle && (now - since) * 1000.0 >= idle_ms {
                self.parts[index as usize].idle = true;
                let watermark = self.watermark_without_idle();
                self.idle_events.push((index, watermark));
            }
        }
    }

    /// Windows complete under the watermark, oldest first; they leave the buffer.
    pub fn ready(&mut self, now: f64) -> Vec<Ready> {
        let Some(watermark) = self.watermark(now) else {
            return Vec::new();
        };
        let window_ms = self.settings.window_ms;
        let horizon = watermark - self.settings.label_wait_ms;
        let closed = (horizon - window_ms - 1).div_euclid(window_ms) * window_ms;
        let mut done: Vec<(i64, Vec<Row>)> = Vec::new();
        while let Some(entry) = self.windows.first_entry() {
            if *entry.key() > closed {
                break;
            }
            let (start, mut rows) = entry.remove_entry();
            rows.sort_unstable_by(|a, b| (a.ts, &a.id).cmp(&(b.ts, &b.id)));
            if Some(start) == self.learned_until {
                if let Some((ts, id)) = self.resume_from.take() {
                    // The samples before it were learned before a restart.
                    rows.retain(|r| (r.ts, &r.id) >= (ts, &id));
                }
            }
            done.push((start, rows));
        }
        if self
            .learned_until
            .is_none_or(|learned| closed + window_ms > learned)
        {
            self.learned_until = Some(closed + window_ms);
        }
        self.expire(horizon);
        match self.settings.batch_samples {
            Some(size) => self.by_count(done, size),
            None => (done.into_iter())
                .map(|(start, rows)| Ready {
                    start,
                    end: start + window_ms,
                    rows,
                })
                .collect(),
        }
    }

    /// Records that can no longer meet a partner within the wait leave the buffer.
    fn expire(&mut self, horizon: i64) {
        let before = horizon - self.settings.window_ms;
        while self
            .expiry
            .peek()
            .is_some_and(|Reverse((ts, _, _))| *ts < before)
        {
            let Reverse((ts, kind, seq)) = self.expiry.pop().expect("peeked");
            let side = if kind == 1 {
                &mut self.right
            } else {
                &mut self.left
            };
            if let Some(held) = side.take_if(seq, ts) {
                self.expired += u64::from(!held.replayed);
            }
        }
    }

    fn by_count(&mut self, windows: Vec<(i64, Vec<Row>)>, size: usize) -> Vec<Ready> {
        for (start, rows) in windows {
            self.pending
                .extend(rows.into_iter().map(|row| (row, start)));
        }
        let full = self.pending.len() / size * size;
        let rest = self.pending.split_off(full);
        let cut = std::mem::replace(&mut self.pending, rest);
        let mut batches = Vec::with_capacity(full / size);
        let mut rows = cut.into_iter().map(|(row, _)| row).peekable();
        while rows.peek().is_some() {
            let batch: Vec<Row> = rows.by_ref().take(size).collect();
            let (start, end) = (batch[0].ts, batch[batch.len() - 1].ts + 1);
            batches.push(Ready {
                start,
                end,
                rows: batch,
            });
        }
        batches
    }

    // -- checkpoints -------------------------------------------------------------------------

    /// The first sample waiting for a count batch: (its window, time, id).
    pub fn pending_first(&self) -> Option<(i64, i64, &str)> {
        self.pending
            .first()
            .map(|(row, window)| (*window, row.ts, row.id.as_str()))
    }

    /// partition -> the oldest offset still needed: the earliest record held (waiting, in a
    /// window or pending), or the consumed position when none is.
    pub fn needed_offsets(&self) -> Vec<(u32, i64)> {
        let mut needed: Vec<Option<i64>> = self.parts.iter().map(|p| p.consumed).collect();
        let mut hold = |part: u32, offset: i64| {
            let slot = &mut needed[part as usize];
            if slot.is_none_or(|n| offset < n) {
                *slot = Some(offset);
            }
        };
        for side in [&self.left, &self.right] {
            for (_, held) in side.held.values() {
                hold(held.part, held.offset);
            }
        }
        let rows = self
            .windows
            .values()
            .flatten()
            .chain(self.pending.iter().map(|(r, _)| r));
        for row in rows {
            hold(row.features_part, row.features_offset);
            hold(row.label_part, row.label_offset);
        }
        (needed.into_iter().enumerate())
            .filter_map(|(i, offset)| offset.map(|o| (i as u32, o)))
            .collect()
    }
}
