//! Which role runs on which rank: rank 0 coordinates, the last ranks write, the rest work.
//! With fewer than three ranks roles share ranks (threads inside one process).

use super::messages::RoleId;

/// Default workers per writer when events carry frames. `scripts/bench-scaling` measured, per
/// event on one core, 27-31 ms of worker kernels against 6.2-6.5 ms of writer (serialise and
/// files sink) for ePix10k2M, 72-86 against 11.5-13 for Jungfrau 4M and 352-461 against 43-61
/// for Jungfrau 16M (calibrated float32 frames, bitshuffle-LZ4): a writer keeps up with 4.4 to
/// 8.2 workers.
pub const WORKERS_PER_WRITER: u32 = 4;
/// Default workers per writer without frames: a writer then takes about 5,400 ePix10k2M
/// events/s (peaks and fields), ~94 workers' worth; half that leaves room for NNG sends and
/// more peaks.
pub const WORKERS_PER_WRITER_NO_FRAMES: u32 = 48;

/// The role kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleKind {
    Coordinator,
    Worker(u32),
    Writer(u32),
}

/// Role ids and their ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub size: u32,
    pub workers: u32,
    pub writers: u32,
    /// Rank of every role id.
    ranks: Vec<u32>,
}

impl Layout {
    /// The layout for `size` ranks; `writers` forces the writer count, by default one per
    /// [`WORKERS_PER_WRITER`] workers when events carry `frames`, one per
    /// [`WORKERS_PER_WRITER_NO_FRAMES`] otherwise (at least one).
    pub fn new(size: u32, writers: Option<usize>, frames: bool) -> Layout {
        let size = size.max(1);
        if size < 3 {
            // 1 rank: everything on rank 0; 2 ranks: coordinator and writer on 0, worker on 1.
            let worker_rank = size - 1;
            return Layout {
                size,
                workers: 1,
                writers: 1,
                ranks: vec![0, worker_rank, 0],
            };
        }
        let avail = size - 1;
        let w = writers
            .map(|w| w as u32)
            .unwrap_or_else(|| {
                let per = if frames {
                    WORKERS_PER_WRITER
                } else {
                    WORKERS_PER_WRITER_NO_FRAMES
                };
                avail.div_ceil(per + 1)
            })
            .clamp(1, avail - 1);
        let workers = avail - w;
        let mut ranks = vec![0];
        ranks.extend(1..=workers);
        ranks.extend(workers + 1..size);
        Layout {
            size,
            workers,
            writers: w,
            ranks,
        }
    }

    /// Every role on rank 0 of a one-rank job: `workers` workers and `writers` writers
    /// (at least one of each; at most one writer per worker).
    pub fn in_process(workers: u32, writers: u32) -> Layout {
        let workers = workers.max(1);
        let writers = writers.clamp(1, workers);
        Layout {
            size: 1,
            workers,
            writers,
            ranks: vec![0; (1 + workers + writers) as usize],
        }
    }

    /// The coordinator's id.
    pub const COORDINATOR: RoleId = 0;

    /// Id of worker `i`.
    pub fn worker(&self, i: u32) -> RoleId {
        1 + i
    }

    /// Id of writer `j`.
    pub fn writer(&self, j: u32) -> RoleId {
        1 + self.workers + j
    }

    /// The writer that worker `i` feeds.
    pub fn writer_of(&self, i: u32) -> RoleId {
        self.writer(i % self.writers)
    }

    /// The workers feeding writer `j`.
    pub fn workers_of(&self, j: u32) -> Vec<RoleId> {
        (0..self.workers)
            .filter(|i| i % self.writers == j)
            .map(|i| self.worker(i))
            .collect()
    }

    /// The kind of role `id`.
    pub fn kind(&self, id: RoleId) -> RoleKind {
        if id == 0 {
            RoleKind::Coordinator
        } else if id <= self.workers {
            RoleKind::Worker(id - 1)
        } else {
            RoleKind::Writer(id - 1 - self.workers)
        }
    }

    /// The rank hosting role `id`.
    pub fn rank_of(&self, id: RoleId) -> u32 {
        self.ranks[id as usize]
    }

    /// Every role id hosted by `rank`.
    pub fn roles_on(&self, rank: u32) -> Vec<RoleId> {
        (0..self.ranks.len() as u32)
            .filter(|&id| self.ranks[id as usize] == rank)
            .collect()
    }

    /// Number of roles.
    pub fn num_roles(&self) -> u32 {
        self.ranks.len() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rank_has_a_role_and_every_role_a_rank() {
        for (size, frames) in (1..140).flat_map(|s| [(s, true), (s, false)]) {
            let l = Layout::new(size, None, frames);
            for r in 0..size {
                assert!(!l.roles_on(r).is_empty(), "size {size} rank {r}");
            }
            if size >= 3 {
                let per = if frames {
                    WORKERS_PER_WRITER
                } else {
                    WORKERS_PER_WRITER_NO_FRAMES
                };
                assert!(l.workers <= per * l.writers, "size {size}: {l:?}");
                assert!(
                    l.writers == 1 || l.workers >= per * (l.writers - 1),
                    "size {size}"
                );
            }
            assert_eq!(l.num_roles(), 1 + l.workers + l.writers);
            for j in 0..l.writers {
                assert!(!l.workers_of(j).is_empty());
            }
            for i in 0..l.workers {
                assert_eq!(l.kind(l.worker(i)), RoleKind::Worker(i));
                assert!(
                    l.workers_of(l.writer_of(i) - 1 - l.workers)
                        .contains(&l.worker(i))
                );
            }
        }
        let l = Layout::new(4, None, true);
        assert_eq!((l.workers, l.writers), (2, 1));
        assert_eq!(l.roles_on(3), vec![l.writer(0)]);
        let l = Layout::new(128, None, true);
        assert_eq!((l.workers, l.writers), (101, 26));
        let l = Layout::new(128, None, false);
        assert_eq!((l.workers, l.writers), (124, 3));
        let l = Layout::new(2, None, true);
        assert_eq!(l.roles_on(0), vec![0, 2]);
        assert_eq!(l.roles_on(1), vec![1]);
        let l = Layout::new(30, Some(4), false);
        assert_eq!((l.workers, l.writers), (25, 4));
    }

    #[test]
    fn in_process_puts_every_role_on_rank_zero() {
        let l = Layout::in_process(6, 2);
        assert_eq!((l.size, l.workers, l.writers), (1, 6, 2));
        assert_eq!(l.roles_on(0), (0..9).collect::<Vec<_>>());
        assert_eq!(l.workers_of(1), vec![l.worker(1), l.worker(3), l.worker(5)]);
        assert_eq!(l.kind(8), RoleKind::Writer(1));
        let l = Layout::in_process(2, 5);
        assert_eq!((l.workers, l.writers), (2, 2));
    }
}
