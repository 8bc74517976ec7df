//! GPU timestamps per dispatch (`--profile`), summed per kernel into a table.

use std::collections::BTreeMap;

/// Timestamp queries for one submit at a time, and the totals per kernel label.
pub struct Profiler {
    pub(crate) queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Dispatches one submit can time; later ones in the same submit go untimed.
    pub(crate) capacity: u32,
    period_ns: f64,
    totals: BTreeMap<&'static str, (u64, f64)>,
    pub untimed: u64,
}

impl Profiler {
    pub(crate) fn new(device: &wgpu::Device, queue: &wgpu::Queue) -> Self {
        let capacity = 1024u32;
        let count = 2 * capacity;
        let bytes = count as u64 * 8;
        let queries = device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profiler"),
            ty: wgpu::QueryType::Timestamp,
            count,
        });
        let buffer = |usage, label| {
            device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size: bytes,
                usage,
                mapped_at_creation: false,
            })
        };
        Self {
            queries,
            resolve: buffer(wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC, "timestamps"),
            readback: buffer(wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST, "timestamps readback"),
            capacity,
            period_ns: queue.get_timestamp_period() as f64,
            totals: BTreeMap::new(),
            untimed: 0,
        }
    }

    /// Adds the commands that move `n` timed dispatches' timestamps to the readback buffer.
    pub(crate) fn resolve(&self, encoder: &mut wgpu::CommandEncoder, n: u32) {
        if n == 0 {
            return;
        }
        encoder.resolve_query_set(&self.queries, 0..2 * n, &self.resolve, 0);
        encoder.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, 16 * n as u64);
    }

    /// After the submit completed: reads the timestamps and adds them to the totals.
    pub(crate) fn collect(&mut self, device: &wgpu::Device, labels: &[&'static str]) {
        if labels.is_empty() {
            return;
        }
        let bytes = 16 * labels.len() as u64;
        let slice = self.readback.slice(0..bytes);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        if device.poll(wgpu::PollType::wait_indefinitely()).is_err() {
            return;
        }
        if let Ok(view) = slice.get_mapped_range() {
            let ticks: &[u64] = bytemuck::cast_slice(&view);
            for (i, label) in labels.iter().enumerate() {
                let ns = ticks[2 * i + 1].saturating_sub(ticks[2 * i]) as f64 * self.period_ns;
                let e = self.totals.entry(label).or_default();
                e.0 += 1;
                e.1 += ns;
            }
        }
        self.readback.unmap();
    }

    /// Time per kernel, largest total first.
    pub fn table(&self) -> String {
        let mut rows: Vec<_> = self.totals.iter().collect();
        rows.sort_by(|a, b| b.1 .1.total_cmp(&a.1 .1));
        let all: f64 = rows.iter().map(|r| r.1 .1).sum();
        let mut s = format!("{:<28} {:>8} {:>12} {:>12} {:>7}\n", "kernel", "calls", "total ms", "mean ms", "share");
        for (label, (calls, ns)) in rows {
            s += &format!(
                "{:<28} {:>8} {:>12.3} {:>12.4} {:>6.1}%\n",
                label,
                calls,
                ns / 1e6,
                ns / 1e6 / *calls as f64,
                100.0 * ns / all.max(1e-9)
            );
        }
        if self.untimed > 0 {
            s += &format!("({} dispatches past {} per submit went untimed)\n", self.untimed, self.capacity);
        }
        s
    }

    /// Each kernel label's share of all timed GPU time (0 to 1).
    pub fn shares(&self) -> BTreeMap<String, f64> {
        let all: f64 = self.totals.values().map(|(_, ns)| ns).sum();
        self.totals.iter().map(|(k, (_, ns))| (k.to_string(), ns / all.max(1e-9))).collect()
    }

    pub fn reset(&mut self) {
        self.totals.clear();
        self.untimed = 0;
    }
}
