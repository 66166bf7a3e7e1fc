//! Counts of something a client holds (bodies still arriving, requests through a trusted proxy)
//! per client address and server-wide, each capped: a slot is taken or refused at once, and given
//! back when its guard drops. Used by `body_timeout` and `forwarded_cap`.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;

/// Which cap an attempt is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    /// Its client address holds its share.
    Address,
    /// The server holds its share.
    Server,
}

/// Held counts, per client address and in total.
pub struct AddressCaps {
    per_ip: DashMap<IpAddr, usize>,
    total: AtomicUsize,
    per_ip_max: usize,
    total_max: usize,
}

/// One held place in the counts, given back on drop.
pub struct Slot {
    bodies: Arc<AddressCaps>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.bodies.total.fetch_sub(1, Ordering::AcqRel);
        if let dashmap::Entry::Occupied(mut e) = self.bodies.per_ip.entry(self.ip) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

impl AddressCaps {
    pub fn new(per_ip_max: usize, total_max: usize) -> Arc<Self> {
        Arc::new(AddressCaps {
            per_ip: DashMap::new(),
            total: AtomicUsize::new(0),
            per_ip_max,
            total_max,
        })
    }

    /// Slots held now (all addresses).
    pub fn held(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// A slot for `ip`, or the cap it is over (nothing is counted then).
    pub fn acquire(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Over> {
        {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            if *n >= self.per_ip_max {
                return Err(Over::Address);
            }
            *n += 1;
        }
        // The slot exists from here: dropping it on the server-wide refusal uncounts `ip` too.
        let slot = Slot {
            bodies: self.clone(),
            ip,
        };
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.total_max {
            drop(slot);
            return Err(Over::Server);
        }
        Ok(slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_total_and_frees_on_drop() {
        let bodies = AddressCaps::new(2, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        let a1 = bodies.acquire(a).expect("a1");
        let _a2 = bodies.acquire(a).expect("a2");
        assert_eq!(bodies.acquire(a).err(), Some(Over::Address));
        let _b1 = bodies.acquire(b).expect("b1");
        assert_eq!(bodies.acquire(b).err(), Some(Over::Server));
        assert_eq!(bodies.held(), 3);
        drop(a1);
        assert_eq!(bodies.held(), 2);
        let _b2 = bodies.acquire(b).expect("b2 after a1 left");
        // A refused attempt leaves no count behind.
        assert_eq!(bodies.acquire(b).err(), Some(Over::Address));
        assert_eq!(bodies.held(), 3);
        assert_eq!(bodies.per_ip.get(&b).map(|n| *n), Some(2));
    }
}
