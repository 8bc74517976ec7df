//! Data-parallel ranks over MPI (Open MPI through the rsmpi crate, cargo feature `mpi`).
//!
//! Layer: beside gpu at the bottom; it uses no other module. parallel and train use it.
//!
//! One thread owns MPI: it calls MPI_Init (Threading::Funneled), runs every collective the
//! training loop hands it, in order, and finalizes at the end. The training thread meanwhile
//! waits on the GPU, so a gradient bucket is reduced while the GPU computes the next one.
//! Without the feature, or outside mpirun, there is one rank and every collective returns its
//! input.

use std::sync::mpsc::Receiver;

/// Gradient buckets are closed at layer boundaries once they hold this many bytes, as
/// PyTorch DDP's default bucket_cap_mb. WGTRAIN_BUCKET_BYTES overrides it.
pub const BUCKET_BYTES: u64 = 25 << 20;

/// The bucket size: WGTRAIN_BUCKET_BYTES if set to a number, else BUCKET_BYTES.
pub fn bucket_bytes() -> u64 {
    std::env::var("WGTRAIN_BUCKET_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(BUCKET_BYTES)
}

/// This process's place among the ranks, and the channel to the MPI thread.
pub struct Dist {
    pub rank: usize,
    pub size: usize,
    /// Rank among the processes on this machine: picks the adapter.
    pub local_rank: usize,
    #[cfg(feature = "mpi")]
    comm: Option<mpi_thread::Thread>,
}

/// A collective in flight.
pub enum Pending<T> {
    Ready(T),
    Waiting(Receiver<T>),
}

impl<T> Pending<T> {
    pub fn wait(self) -> T {
        match self {
            Pending::Ready(t) => t,
            Pending::Waiting(rx) => rx.recv().expect("the MPI thread ended in the middle of a collective"),
        }
    }
}

impl Dist {
    /// One rank, no MPI.
    pub fn single() -> Self {
        Dist {
            rank: 0,
            size: 1,
            local_rank: 0,
            #[cfg(feature = "mpi")]
            comm: None,
        }
    }

    /// The ranks of an `mpirun` launch, or one rank when not launched by mpirun. Fails when
    /// launched by mpirun without the `mpi` feature, rather than train N copies apart.
    pub fn from_env() -> Result<Self, String> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// `from_env`, reading the environment through `var`.
    pub fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let world: Option<usize> =
            ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE"].iter().find_map(|v| var(v)).and_then(|s| s.parse().ok());
        match world {
            None | Some(1) => Ok(Self::single()),
            #[cfg(feature = "mpi")]
            Some(_) => mpi_thread::start(),
            #[cfg(not(feature = "mpi"))]
            Some(n) => Err(format!(
                "launched as {n} MPI ranks, but this wgtrain was built without MPI: \
                 cargo build --release --features mpi (needs libopenmpi-dev and libclang-dev)"
            )),
        }
    }

    /// Finalizes MPI (the MPI thread ends); for exits that skip destructors.
    pub fn finish(self) {}

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// Time the MPI thread has spent in collectives so far.
    pub fn comm_time(&self) -> std::time::Duration {
        #[cfg(feature = "mpi")]
        if let Some(c) = &self.comm {
            return std::time::Duration::from_nanos(c.busy.load(std::sync::atomic::Ordering::Relaxed));
        }
        std::time::Duration::ZERO
    }

    /// Runs `f` on the MPI thread, after every collective handed over before it.
    #[cfg(feature = "mpi")]
    fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mpi::topology::SimpleCommunicator) -> R + Send + 'static,
    ) -> Receiver<R> {
        self.comm.as_ref().expect("MPI running").run(f)
    }

    /// Element-wise sum over ranks, started now, waited for with `Pending::wait`.
    pub fn all_reduce_sum(&self, data: Vec<f32>) -> Pending<Vec<f32>> {
        #[cfg(feature = "mpi")]
        if self.comm.is_some() {
            let rx = self.run(move |w| {
                use mpi::collective::{CommunicatorCollectives, SystemOperation};
                let mut out = vec![0.0f32; data.len()];
                w.all_reduce_into(&data[..], &mut out[..], SystemOperation::sum());
                out
            });
            return Pending::Waiting(rx);
        }
        Pending::Ready(data)
    }

    /// Element-wise sum over ranks in f64 (losses, norms, flags), blocking.
    pub fn all_reduce_f64(&self, data: Vec<f64>) -> Vec<f64> {
        #[cfg(feature = "mpi")]
        if self.comm.is_some() {
            let rx = self.run(move |w| {
                use mpi::collective::{CommunicatorCollectives, SystemOperation};
                let mut out = vec![0.0f64; data.len()];
                w.all_reduce_into(&data[..], &mut out[..], SystemOperation::sum());
                out
            });
            return rx.recv().expect("MPI thread");
        }
        data
    }

    /// The mean over ranks of one number.
    pub fn mean(&self, x: f64) -> f64 {
        self.all_reduce_f64(vec![x])[0] / self.size as f64
    }

    /// Rank 0's value, on every rank.
    pub fn from_root(&self, x: f64) -> f64 {
        self.all_reduce_f64(vec![if self.is_root() { x } else { 0.0 }])[0]
    }

    /// Rank 0's string, on every rank (for short strings: it travels as one f64 per byte).
    pub fn string_from_root(&self, s: String) -> String {
        if self.size == 1 {
            return s;
        }
        let len = self.from_root(s.len() as f64) as usize;
        let mut bytes = vec![0.0f64; len];
        if self.is_root() {
            bytes.iter_mut().zip(s.bytes()).for_each(|(x, b)| *x = b as f64);
        }
        let bytes: Vec<u8> = self.all_reduce_f64(bytes).into_iter().map(|x| x as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Sums `data` (size blocks of `block` elements) over ranks and returns block `rank`.
    pub fn reduce_scatter_sum(&self, data: Vec<f32>, block: usize) -> Vec<f32> {
        assert_eq!(data.len(), block * self.size);
        #[cfg(feature = "mpi")]
        if self.comm.is_some() {
            let rx = self.run(move |w| {
                use mpi::collective::{CommunicatorCollectives, SystemOperation};
                let mut out = vec![0.0f32; block];
                w.reduce_scatter_block_into(&data[..], &mut out[..], SystemOperation::sum());
                out
            });
            return rx.recv().expect("MPI thread");
        }
        data
    }

    /// Every rank's `mine` (of lengths `counts`), concatenated in rank order, on every rank.
    pub fn all_gather(&self, mine: Vec<f32>, counts: Vec<usize>) -> Vec<f32> {
        #[cfg(feature = "mpi")]
        if self.comm.is_some() {
            let rx = self.run(move |w| {
                use mpi::collective::CommunicatorCollectives;
                use mpi::datatype::PartitionMut;
                let total: usize = counts.iter().sum();
                let c: Vec<i32> = counts.iter().map(|&n| n as i32).collect();
                let d: Vec<i32> =
                    counts.iter().scan(0i32, |acc, &n| Some(std::mem::replace(acc, *acc + n as i32))).collect();
                let mut out = vec![0.0f32; total];
                let mut part = PartitionMut::new(&mut out[..], c, &d[..]);
                w.all_gather_varcount_into(&mine[..], &mut part);
                out
            });
            return rx.recv().expect("MPI thread");
        }
        let _ = counts;
        mine
    }

    /// Every rank's bytes, on rank 0 (empty elsewhere). Sent in rounds whose total stays
    /// under MPI's int32 counts and displacements, so shards of any size pass.
    pub fn gather_bytes(&self, mine: Vec<u8>) -> Vec<Vec<u8>> {
        if self.size == 1 {
            return vec![mine];
        }
        // Everyone's length, through a sum where each rank fills its own slot.
        let mut lens = vec![0.0f64; self.size];
        lens[self.rank] = mine.len() as f64;
        let lens: Vec<usize> = self.all_reduce_f64(lens).into_iter().map(|x| x as usize).collect();
        let piece = (i32::MAX as usize / self.size).max(1);
        let rounds = lens.iter().map(|&n| n.div_ceil(piece)).max().unwrap_or(0);
        let mut out: Vec<Vec<u8>> =
            lens.iter().map(|&n| Vec::with_capacity(if self.is_root() { n } else { 0 })).collect();
        for k in 0..rounds {
            let part = mine[(k * piece).min(mine.len())..((k + 1) * piece).min(mine.len())].to_vec();
            let counts: Vec<usize> = lens.iter().map(|&n| n.saturating_sub(k * piece).min(piece)).collect();
            for (r, bytes) in self.gather_round(part, counts).into_iter().enumerate() {
                out[r].extend_from_slice(&bytes);
            }
        }
        if self.is_root() {
            out
        } else {
            Vec::new()
        }
    }

    /// One round of `gather_bytes`: `counts` are every rank's byte counts, summing under 2^31.
    fn gather_round(&self, mine: Vec<u8>, counts: Vec<usize>) -> Vec<Vec<u8>> {
        #[cfg(feature = "mpi")]
        if self.comm.is_some() {
            let rx = self.run(move |w| {
                use mpi::collective::Root;
                use mpi::datatype::PartitionMut;
                use mpi::topology::Communicator;
                let root = w.process_at_rank(0);
                if w.rank() != 0 {
                    root.gather_varcount_into(&mine[..]);
                    return Vec::new();
                }
                let c: Vec<i32> = counts.iter().map(|&n| n as i32).collect();
                let d: Vec<i32> = c.iter().scan(0i32, |acc, &n| Some(std::mem::replace(acc, *acc + n))).collect();
                let mut all = vec![0u8; counts.iter().sum()];
                let mut part = PartitionMut::new(&mut all[..], &c[..], &d[..]);
                root.gather_varcount_into_root(&mine[..], &mut part);
                let mut at = 0;
                counts
                    .iter()
                    .map(|&n| {
                        at += n;
                        all[at - n..at].to_vec()
                    })
                    .collect()
            });
            return rx.recv().expect("MPI thread");
        }
        let _ = counts;
        vec![mine]
    }

    pub fn barrier(&self) {
        #[cfg(feature = "mpi")]
        if self.comm.is_some() {
            let rx = self.run(|w| {
                use mpi::collective::CommunicatorCollectives;
                w.barrier();
            });
            rx.recv().expect("MPI thread");
        }
    }

    /// Ends every rank at once after an error on this one (MPI_Abort), so that none waits
    /// forever in a collective. Returns only with one rank.
    pub fn abort(&self, code: i32) {
        #[cfg(feature = "mpi")]
        if self.comm.is_some() {
            let rx = self.run(move |w| {
                use mpi::topology::Communicator;
                w.abort(code)
            });
            let _ = rx.recv();
        }
        let _ = code;
    }
}

#[cfg(feature = "mpi")]
mod mpi_thread {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{channel, Receiver, Sender};
    use std::sync::Arc;
    use std::thread::JoinHandle;

    use mpi::topology::{Communicator, SimpleCommunicator};
    use mpi::Threading;

    type Job = Box<dyn FnOnce(&SimpleCommunicator) + Send>;

    pub struct Thread {
        tx: Option<Sender<Job>>,
        handle: Option<JoinHandle<()>>,
        /// Nanoseconds spent running jobs.
        pub busy: Arc<AtomicU64>,
    }

    impl Thread {
        pub fn run<R: Send + 'static>(&self, f: impl FnOnce(&SimpleCommunicator) -> R + Send + 'static) -> Receiver<R> {
            let (tx, rx) = channel();
            let busy = self.busy.clone();
            let job: Job = Box::new(move |w| {
                let t = std::time::Instant::now();
                let r = f(w);
                busy.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                let _ = tx.send(r);
            });
            self.tx.as_ref().expect("MPI thread running").send(job).expect("MPI thread running");
            rx
        }
    }

    impl Drop for Thread {
        fn drop(&mut self) {
            // Closing the channel ends the thread's loop; it finalizes MPI on the way out.
            self.tx.take();
            if let Some(h) = self.handle.take() {
                let _ = h.join();
            }
        }
    }

    pub fn start() -> Result<super::Dist, String> {
        let (tx, rx) = channel::<Job>();
        let (info_tx, info_rx) = channel();
        let handle = std::thread::Builder::new()
            .name("mpi".into())
            .spawn(move || {
                let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
                    let _ = info_tx.send(Err("MPI_Init failed".to_string()));
                    return;
                };
                let world = universe.world();
                let local = world.split_shared(world.rank());
                let _ = info_tx.send(Ok((world.rank() as usize, world.size() as usize, local.rank() as usize)));
                for job in rx {
                    job(&world);
                }
                drop(local);
                drop(universe);
            })
            .map_err(|e| format!("cannot start the MPI thread: {e}"))?;
        let (rank, size, local_rank) =
            info_rx.recv().map_err(|_| "the MPI thread died during MPI_Init".to_string())??;
        if size > 1 {
            // A panic must not leave the other ranks waiting in a collective (unwinding would
            // reach MPI_Finalize, which waits for them): end this process, and mpirun ends the
            // rest.
            let report = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                report(info);
                eprintln!("rank {rank}: panicked; aborting so that mpirun ends every rank");
                std::process::abort();
            }));
        }
        Ok(super::Dist {
            rank,
            size,
            local_rank,
            comm: Some(Thread { tx: Some(tx), handle: Some(handle), busy: Arc::default() }),
        })
    }
}
