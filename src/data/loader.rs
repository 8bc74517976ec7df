//! The batch loader: rows of T tokens with their targets, cut from a token stream (pretraining)
//! or one example per row (supervised fine-tuning, where a mask says which targets count).

use super::sft::{Examples, IGNORE};
use crate::rng::Rng;

/// A loader's position, saved with checkpoints.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LoaderState {
    pub pos: usize,
    pub order: Vec<usize>,
    pub rng: u64,
}

/// Batches of B rows × T tokens with targets shifted by one.
///
/// Sequential (`shuffle` off): position p starts at 0; a batch reads B·T + 1 tokens from p,
/// row b starting at p + b·T; then p += B·T, and p returns to 0 when p + B·T + 1 would pass
/// the end. Shuffled: the units are the stream's rows (T + 1 tokens from each multiple of T),
/// in an order drawn per epoch from the seed, and a batch takes the next B of them, so its
/// rows come from B places in the data rather than one stretch of B·T tokens (a stretch is
/// one scene: its loss swings from batch to batch). An epoch ends where fewer than B rows are
/// left.
///
/// With `Examples` (masked data), a row is one example: its first T + 1 tokens, padded after
/// its end, with the targets it does not count (prompt tokens, padding) set to IGNORE. The
/// units are examples: a batch takes the next B, in file order or in an order drawn per
/// epoch.
#[derive(Clone, Debug)]
pub struct Loader {
    tokens: Vec<u32>,
    examples: Option<Examples>,
    b: usize,
    t: usize,
    shuffle: bool,
    /// Sequential position (a token, or an example), or index into `order` when shuffling.
    pub pos: usize,
    order: Vec<usize>,
    rng: u64,
}

impl Loader {
    pub fn new(tokens: Vec<u32>, b: usize, t: usize, shuffle: bool, seed: u64) -> Result<Self, String> {
        if tokens.len() < b * t + 1 {
            return Err(format!("{} tokens are fewer than one batch needs ({} × {} + 1)", tokens.len(), b, t));
        }
        let mut l = Self { tokens, examples: None, b, t, shuffle, pos: 0, order: Vec::new(), rng: seed };
        l.new_epoch();
        Ok(l)
    }

    /// A loader of one example per row (`examples` cut `tokens`).
    pub fn with_examples(
        tokens: Vec<u32>,
        examples: Examples,
        b: usize,
        t: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<Self, String> {
        if examples.len() < b {
            return Err(format!("{} examples are fewer than one batch of {b} rows", examples.len()));
        }
        let mut l = Self { tokens, examples: Some(examples), b, t, shuffle, pos: 0, order: Vec::new(), rng: seed };
        l.new_epoch();
        Ok(l)
    }

    /// A loader of tokens, or of masked examples where there are some.
    pub fn of(
        (tokens, examples): (Vec<u32>, Option<Examples>),
        b: usize,
        t: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<Self, String> {
        match examples {
            Some(e) => Self::with_examples(tokens, e, b, t, shuffle, seed),
            None => Self::new(tokens, b, t, shuffle, seed),
        }
    }

    /// Examples longer than a row holds (None without examples).
    pub fn longer_than(&self, t: usize) -> Option<usize> {
        self.examples.as_ref().map(|e| e.longer_than(t))
    }

    /// Whether its targets have a mask (some are IGNORE).
    pub fn masked(&self) -> bool {
        self.examples.is_some()
    }

    /// Batches per epoch.
    pub fn batches(&self) -> usize {
        match &self.examples {
            Some(e) => e.len() / self.b,
            None if self.shuffle => self.rows() / self.b,
            None => self.stretches(),
        }
    }

    /// Stretches of B·T + 1 tokens that start at a multiple of B·T: the sequential batches.
    fn stretches(&self) -> usize {
        (self.tokens.len() - 1) / (self.b * self.t)
    }

    /// Rows of T + 1 tokens that start at a multiple of T.
    fn rows(&self) -> usize {
        (self.tokens.len() - 1) / self.t
    }

    /// What one shuffle permutes: the stream's rows, or examples.
    fn units(&self) -> usize {
        self.examples.as_ref().map_or(self.rows(), Examples::len)
    }

    fn new_epoch(&mut self) {
        if !self.shuffle && self.examples.is_none() {
            return; // the sequential stream keeps no order
        }
        self.order = (0..self.units()).collect();
        if self.shuffle {
            let mut rng = Rng::new(self.rng);
            for i in (1..self.order.len()).rev() {
                let j = (rng.next_u64() % (i as u64 + 1)) as usize;
                self.order.swap(i, j);
            }
            self.rng = rng.next_u64();
        }
        self.pos = 0;
    }

    /// The next (inputs, targets), each B·T tokens.
    pub fn next_batch(&mut self) -> (Vec<u32>, Vec<u32>) {
        if self.examples.is_some() {
            return self.next_examples();
        }
        if self.shuffle {
            return self.next_rows();
        }
        let n = self.b * self.t;
        if self.pos + n + 1 > self.tokens.len() {
            self.pos = 0;
        }
        let chunk = &self.tokens[self.pos..self.pos + n + 1];
        self.pos += n;
        (chunk[..n].to_vec(), chunk[1..].to_vec())
    }

    /// `next_batch` of shuffled stream rows: the next B of this epoch's order.
    fn next_rows(&mut self) -> (Vec<u32>, Vec<u32>) {
        if self.pos + self.b > self.order.len() {
            self.new_epoch();
        }
        let (mut x, mut y) = (Vec::with_capacity(self.b * self.t), Vec::with_capacity(self.b * self.t));
        for &row in &self.order[self.pos..self.pos + self.b] {
            let chunk = &self.tokens[row * self.t..row * self.t + self.t + 1];
            x.extend_from_slice(&chunk[..self.t]);
            y.extend_from_slice(&chunk[1..]);
        }
        self.pos += self.b;
        (x, y)
    }

    /// `next_batch` of masked data: B examples, a row each. Shuffled, an epoch ends where
    /// fewer than B examples are left; in order, the examples wrap around.
    fn next_examples(&mut self) -> (Vec<u32>, Vec<u32>) {
        let (mut x, mut y) = (Vec::with_capacity(self.b * self.t), Vec::with_capacity(self.b * self.t));
        if self.shuffle && self.pos + self.b > self.order.len() {
            self.new_epoch();
        }
        let ex = self.examples.as_ref().expect("masked data");
        for _ in 0..self.b {
            if self.pos >= self.order.len() {
                self.pos = 0;
            }
            ex.row(&self.tokens, self.order[self.pos], self.t, (&mut x, &mut y));
            self.pos += 1;
        }
        (x, y)
    }

    /// Targets the next `batches` batches count (every one without a mask), drawn and put back.
    pub fn counted_ahead(&mut self, batches: usize) -> u64 {
        if self.examples.is_none() {
            return (batches * self.b * self.t) as u64;
        }
        let saved = self.state();
        let n = (0..batches).map(|_| self.next_batch().1.iter().filter(|&&y| y != IGNORE).count() as u64).sum();
        self.restore(saved).expect("its own state");
        n
    }

    /// Where the loader stands, for exact resume: (position, this epoch's order, shuffle state).
    pub fn state(&self) -> LoaderState {
        LoaderState { pos: self.pos, order: self.order.clone(), rng: self.rng }
    }

    /// Continues from a saved state. Fails if the state does not fit this data and batch shape.
    pub fn restore(&mut self, st: LoaderState) -> Result<(), String> {
        let fits = if self.shuffle {
            let mut seen = vec![false; self.units()];
            st.order.len() == seen.len()
                && st.pos <= st.order.len()
                && st.order.iter().all(|&b| b < seen.len() && !std::mem::replace(&mut seen[b], true))
        } else {
            st.pos < self.examples.as_ref().map_or(self.tokens.len(), Examples::len)
        };
        if !fits && self.shuffled_whole_batches(&st) {
            return Err("the checkpoint was saved by an earlier wgtrain, which shuffled whole batches \
                        rather than rows: resume it with that version, or start a new run"
                .into());
        }
        if !fits {
            return Err("the saved data position does not fit this data; resume with the same --data".into());
        }
        self.pos = st.pos;
        self.order = st.order;
        self.rng = st.rng;
        Ok(())
    }

    /// Whether `st` is an order of this stream's batches, as wgtrain saved before it shuffled rows.
    fn shuffled_whole_batches(&self, st: &LoaderState) -> bool {
        self.shuffle && self.examples.is_none() && self.b > 1 && st.order.len() == self.stretches()
    }

    /// The largest token id, to check against the vocabulary.
    pub fn max_token(&self) -> u32 {
        self.tokens.iter().copied().max().unwrap_or(0)
    }
}
