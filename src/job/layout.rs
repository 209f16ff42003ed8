//! Which role runs on which rank: rank 0 coordinates, the last ranks write, the rest work.
//! With fewer than three ranks roles share ranks (threads inside one process).

use super::messages::RoleId;

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
    /// The layout for `size` ranks; `writers` forces the writer count (default one per 12
    /// workers, at least one).
    pub fn new(size: u32, writers: Option<usize>) -> Layout {
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
            .unwrap_or_else(|| (avail - 1).div_ceil(13).max(1))
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
        for size in 1..40 {
            let l = Layout::new(size, None);
            for r in 0..size {
                assert!(!l.roles_on(r).is_empty(), "size {size} rank {r}");
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
        let l = Layout::new(4, None);
        assert_eq!((l.workers, l.writers), (2, 1));
        assert_eq!(l.roles_on(3), vec![l.writer(0)]);
        let l = Layout::new(2, None);
        assert_eq!(l.roles_on(0), vec![0, 2]);
        assert_eq!(l.roles_on(1), vec![1]);
        let l = Layout::new(30, Some(4));
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
