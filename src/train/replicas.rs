//! Replica drift under plain data parallelism: every rank updates its own copy of the
//! parameters, so a rank whose arithmetic differs (a faulty GPU, a driver bug, other flags)
//! would go on training a model of its own. Every --check-replicas steps, and before every
//! checkpoint, the ranks compare a checksum of their parameters, computed on the GPU: eight
//! bytes per rank over MPI.

use anyhow::bail;

use super::log::Log;
use super::setup::Session;
use super::state;
use crate::kernels::checksum::checksum;

impl Session<'_> {
    /// Whether the replica check runs after `step`: every --check-replicas steps, and before
    /// any checkpoint (`saving`), with several ranks.
    pub(super) fn replicas_due(&self, step: u64, saving: bool) -> bool {
        let every = self.a.check_replicas;
        self.par.is_some() && every > 0 && (saving || (step + 1).is_multiple_of(every))
    }

    /// Compares every rank's checksum of the parameters after `step` with rank 0's; a
    /// mismatch stops the run on every rank, naming the ranks and the step. A collective.
    pub(super) fn check_replicas(&mut self, step: u64, log: &mut Log) -> anyhow::Result<()> {
        let (dist, gpt) = (self.dist, &self.gpt);
        let mine = checksum(self.gpu, &gpt.arena.params, gpt.arena.table.len)?;
        let mut all = vec![0.0f64; 2 * dist.size];
        all[2 * dist.rank] = mine[0] as f64;
        all[2 * dist.rank + 1] = mine[1] as f64;
        let all = dist.all_reduce_f64(all);
        let differ: Vec<usize> = (1..dist.size).filter(|&r| all[2 * r] != all[0] || all[2 * r + 1] != all[1]).collect();
        if differ.is_empty() {
            return Ok(());
        }
        log.bar.finish_and_clear();
        let last = state::latest_checkpoint(&self.a.out).map_or("none yet".to_string(), |p| p.display().to_string());
        bail!(
            "replicas drifted by step {step}: the parameters of rank{} {} differ from rank 0's (checksum {:08x}{:08x}); \
             the last checkpoint written before, {last}, was checked: resume from it, and look for the rank's \
             different flags, driver or hardware",
            if differ.len() > 1 { "s" } else { "" },
            differ.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(", "),
            all[0] as u32,
            all[1] as u32
        )
    }
}
