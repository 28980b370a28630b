//! The streams' KV caches as slots of shared buffers, so that a step's
//! RoPE/cache write and attention are one launch for all its streams (a
//! kernel binds one buffer, not one per stream).
//!
//! Per layer, a *bank* holds keys (and, in a second buffer, values) of
//! several streams: `[slots, kv_heads, capacity, head_dim]`. A bank holds
//! as many slots as fit in one binding; more streams take more banks
//! (a step then launches per bank). Banks grow by a slot as streams
//! come — the buffers are replaced and the live slots copied — and every
//! slot has the pool's one capacity: a stream asking for more grows them
//! all. Growth is rare (the app's streams share one capacity and come at
//! start); the plan forgets its captures when it happens. Banks never
//! shrink: a dropped stream's slot waits for the next stream (the most
//! streams ever open at once set the memory held).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cubecl::client::Client;
use cubecl::prelude::CubeDim;
use cubecl::server::Handle;

use super::super::cube::grid;
use super::kernels;
use super::weights::buffer;

/// One stream's KV cache in the plan: a slot of the pool, known by its id
/// (the slot may move when the pool grows).
pub struct PlanKv {
    pub(super) id: u64,
    pub(super) capacity: usize,
    released: Arc<Mutex<Vec<u64>>>,
}

impl Drop for PlanKv {
    fn drop(&mut self) {
        // The pool frees the slot at its next use.
        if let Ok(mut r) = self.released.lock() {
            r.push(self.id);
        }
    }
}

/// A step's rows bank by bank (banks in order, each bank's rows in step
/// order), given each segment's place and rows in step order; and each
/// bank in use with its rows' count.
pub(super) fn bank_order(segments: &[(Place, usize)]) -> (Vec<u32>, Vec<(usize, usize)>) {
    let mut starts = Vec::with_capacity(segments.len());
    let mut row0 = 0;
    for &(_, rows) in segments {
        starts.push(row0);
        row0 += rows;
    }
    let mut banks: Vec<usize> = segments.iter().map(|(p, _)| p.bank).collect();
    banks.sort_unstable();
    banks.dedup();
    let mut order = Vec::with_capacity(row0);
    let mut counts = Vec::with_capacity(banks.len());
    for bank in banks {
        let before = order.len();
        for (&(place, rows), &start) in segments.iter().zip(&starts) {
            if place.bank == bank {
                order.extend((start..start + rows).map(|r| r as u32));
            }
        }
        counts.push((bank, order.len() - before));
    }
    (order, counts)
}

/// A stream's place: its bank and slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Place {
    pub(super) bank: usize,
    pub(super) slot: usize,
}

pub(super) struct Bank {
    /// Per layer.
    pub(super) keys: Vec<Handle>,
    pub(super) values: Vec<Handle>,
    pub(super) slots: usize,
}

pub(super) struct KvPool {
    layers: usize,
    /// Words of one position of one slot (kv_heads × head_dim).
    position_words: usize,
    head_dim: usize,
    bank_bytes: usize,
    /// Positions of every slot.
    pub(super) capacity: usize,
    pub(super) banks: Vec<Bank>,
    places: HashMap<u64, Place>,
    released: Arc<Mutex<Vec<u64>>>,
    next_id: u64,
}

impl KvPool {
    /// A pool of banks of at most `bank_bytes` (one binding's).
    pub(super) fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        bank_bytes: usize,
    ) -> KvPool {
        KvPool {
            bank_bytes,
            layers,
            position_words: kv_heads * head_dim,
            head_dim,
            capacity: 0,
            banks: Vec::new(),
            places: HashMap::new(),
            released: Arc::new(Mutex::new(Vec::new())),
            next_id: 0,
        }
    }

    /// Slots one bank may hold (one binding's bytes).
    fn bank_slots(&self, capacity: usize) -> usize {
        (self.bank_bytes / (4 * self.position_words * capacity).max(1)).max(1)
    }

    /// Where stream `id` lives (None for a stream this pool never gave).
    pub(super) fn place(&self, id: u64) -> Option<Place> {
        self.places.get(&id).copied()
    }

    /// Free the slots of dropped streams.
    pub(super) fn collect_released(&mut self) {
        let gone: Vec<u64> = match self.released.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => return,
        };
        for id in gone {
            self.places.remove(&id);
        }
    }

    /// A slot for a new stream of `capacity` positions; the bool is true
    /// when buffers were replaced (captured steps bind the old ones).
    pub(super) fn take(&mut self, client: &Client, capacity: usize) -> (PlanKv, bool) {
        self.collect_released();
        let id = self.next_id;
        self.next_id += 1;
        let mut replaced = false;
        if capacity > self.capacity {
            self.regrow(client, capacity);
            replaced = true;
        }
        let place = match self.free_place() {
            Some(p) => p,
            None => {
                let per_bank = self.bank_slots(self.capacity);
                match self.banks.iter().position(|b| b.slots < per_bank) {
                    Some(bank) => {
                        let slots = self.banks[bank].slots + 1;
                        self.resize_bank(client, bank, slots);
                        replaced = true;
                        Place {
                            bank,
                            slot: slots - 1,
                        }
                    }
                    None => {
                        self.banks.push(self.allocate(client, 1, self.capacity));
                        Place {
                            bank: self.banks.len() - 1,
                            slot: 0,
                        }
                    }
                }
            }
        };
        self.places.insert(id, place);
        let kv = PlanKv {
            id,
            capacity,
            released: self.released.clone(),
        };
        (kv, replaced)
    }

    fn free_place(&self) -> Option<Place> {
        self.banks.iter().enumerate().find_map(|(bank, b)| {
            (0..b.slots)
                .map(|slot| Place { bank, slot })
                .find(|p| !self.places.values().any(|q| q == p))
        })
    }

    fn allocate(&self, client: &Client, slots: usize, capacity: usize) -> Bank {
        let bytes = 4 * slots * self.position_words * capacity;
        let make = || {
            (0..self.layers)
                .map(|_| client.empty(bytes.max(4)))
                .collect::<Vec<_>>()
        };
        Bank {
            keys: make(),
            values: make(),
            slots,
        }
    }

    /// Bank `bank` with `slots` slots, its live slots kept in place.
    fn resize_bank(&mut self, client: &Client, bank: usize, slots: usize) {
        let new = self.allocate(client, slots, self.capacity);
        let moves: Vec<(Place, Place)> = self
            .places
            .values()
            .filter(|p| p.bank == bank)
            .map(|&p| (p, p))
            .collect();
        self.copy(client, &self.banks[bank], &new, self.capacity, &moves);
        self.banks[bank] = new;
    }

    /// Every slot at `capacity` positions: new banks, the live streams
    /// packed into them in order and their positions copied.
    fn regrow(&mut self, client: &Client, capacity: usize) {
        let per_bank = self.bank_slots(capacity);
        let mut ids: Vec<u64> = self.places.keys().copied().collect();
        ids.sort_unstable();
        let mut banks: Vec<Bank> = ids
            .chunks(per_bank)
            .map(|c| self.allocate(client, c.len(), capacity))
            .collect();
        let old_capacity = self.capacity;
        let old_banks = std::mem::take(&mut self.banks);
        for (i, id) in ids.iter().enumerate() {
            let to = Place {
                bank: i / per_bank,
                slot: i % per_bank,
            };
            if let Some(from) = self.places.insert(*id, to) {
                self.copy_slot(
                    client,
                    (&old_banks[from.bank], from, old_capacity),
                    (&banks[to.bank], to, capacity),
                );
            }
        }
        banks.shrink_to_fit();
        self.banks = banks;
        self.capacity = capacity;
    }

    fn copy(
        &self,
        client: &Client,
        from: &Bank,
        to: &Bank,
        capacity: usize,
        moves: &[(Place, Place)],
    ) {
        for &(a, b) in moves {
            self.copy_slot(client, (from, a, capacity), (to, b, capacity));
        }
    }

    /// Copy a slot's positions (all `old` of them: `(bank, place, old)`)
    /// of every layer, keys and values, into a slot of `new` ≥ `old`
    /// positions.
    fn copy_slot(&self, client: &Client, from: (&Bank, Place, usize), to: (&Bank, Place, usize)) {
        let ((src_bank, a, old), (dst_bank, b, new)) = (from, to);
        let n = (old * self.position_words) as u32;
        if n == 0 {
            return;
        }
        let (src_len, dst_len) = (
            src_bank.slots * self.position_words * old,
            dst_bank.slots * self.position_words * new,
        );
        let pairs = (src_bank.keys.iter().zip(&dst_bank.keys))
            .chain(src_bank.values.iter().zip(&dst_bank.values));
        for (src, dst) in pairs {
            // SAFETY: slot a of the source holds `n` words (`old` positions
            // per head), slot b of the destination the same heads at `new`
            // ≥ `old` positions; the kernel guards its index by n.
            unsafe {
                kernels::copy_cache::launch_unchecked(
                    client,
                    grid(n.div_ceil(256)),
                    CubeDim::new_1d(256),
                    buffer(src, src_len),
                    buffer(dst, dst_len),
                    (a.slot * self.position_words * old) as u32,
                    (b.slot * self.position_words * new) as u32,
                    (old * self.head_dim) as u32,
                    (new * self.head_dim) as u32,
                    n,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Place, bank_order};

    #[test]
    fn rows_are_grouped_by_bank_in_step_order() {
        let at = |bank, slot| Place { bank, slot };
        // Rows 0-1 (bank 1), 2 (bank 0), 3-5 (bank 1), 6 (bank 2).
        let segments = [(at(1, 0), 2), (at(0, 3), 1), (at(1, 1), 3), (at(2, 0), 1)];
        let (order, banks) = bank_order(&segments);
        assert_eq!(order, vec![2, 0, 1, 3, 4, 5, 6]);
        assert_eq!(banks, vec![(0, 1), (1, 5), (2, 1)]);
        assert_eq!(bank_order(&[]), (vec![], vec![]));
    }
}
