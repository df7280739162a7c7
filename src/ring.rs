//! A bounded lock-free single-producer single-consumer ring: how the receiver
//! hands shared source packets to a worker. Push and pop never allocate; the
//! slots are allocated once. [`channel`] returns the two ends, neither of
//! which can be cloned, so there is one producer and one consumer by type.
//!
//! Model-checked with loom: `tests/engine/ring_loom/` builds this file with `--cfg loom`,
//! which swaps the atomics, the cell and the Arc below for loom's, and explores
//! every interleaving of a producer and a consumer (`scripts/test` runs it).

use std::mem::MaybeUninit;

#[cfg(loom)]
use loom::{
    cell::UnsafeCell,
    sync::atomic::{AtomicUsize, Ordering},
    sync::Arc,
};
#[cfg(not(loom))]
use std::{
    sync::atomic::{AtomicUsize, Ordering},
    sync::Arc,
};

/// `std::cell::UnsafeCell` with loom's closure API, so that one body serves both.
#[cfg(not(loom))]
struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    fn new(value: T) -> Self {
        Self(std::cell::UnsafeCell::new(value))
    }

    fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }
}

/// Keeps the producer's and the consumer's indexes on separate cache lines.
#[repr(align(128))]
struct Padded(AtomicUsize);

struct Ring<T> {
    slots: Box<[UnsafeCell<MaybeUninit<T>>]>,
    mask: usize,
    /// The next slot to pop; written by the consumer only.
    head: Padded,
    /// The next slot to push; written by the producer only.
    tail: Padded,
}

// SAFETY: a slot is written only by the producer before it publishes it (tail,
// Release) and read only by the consumer after it sees it (Acquire), then
// handed back (head, Release); values move between threads, so T: Send.
unsafe impl<T: Send> Sync for Ring<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        let (mut head, tail) = (self.head.0.load(Ordering::Acquire), self.tail.0.load(Ordering::Acquire));
        while head != tail {
            // SAFETY: slots in head..tail hold values pushed and not popped, and
            // `&mut self` means neither end is left to touch them.
            self.slots[head & self.mask].with_mut(|slot| unsafe { (*slot).assume_init_drop() });
            head = head.wrapping_add(1);
        }
    }
}

pub struct Producer<T> {
    ring: Arc<Ring<T>>,
}

pub struct Consumer<T> {
    ring: Arc<Ring<T>>,
}

/// A ring with room for `capacity` values (rounded up to a power of two).
pub fn channel<T>(capacity: usize) -> (Producer<T>, Consumer<T>) {
    let capacity = capacity.max(2).next_power_of_two();
    let slots = (0..capacity).map(|_| UnsafeCell::new(MaybeUninit::uninit())).collect();
    let ring = Arc::new(Ring {
        slots,
        mask: capacity - 1,
        head: Padded(AtomicUsize::new(0)),
        tail: Padded(AtomicUsize::new(0)),
    });
    (Producer { ring: ring.clone() }, Consumer { ring })
}

impl<T> Producer<T> {
    /// Adds `value`, or gives it back if the ring is full.
    pub fn push(&mut self, value: T) -> Result<(), T> {
        let ring = &*self.ring;
        let tail = ring.tail.0.load(Ordering::Relaxed);
        let head = ring.head.0.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > ring.mask {
            return Err(value);
        }
        // SAFETY: the slot at tail is free (the consumer is done with it, as head
        // says) and only this producer writes slots.
        ring.slots[tail & ring.mask].with_mut(|slot| unsafe { (*slot).write(value) });
        ring.tail.0.store(tail.wrapping_add(1), Ordering::Release);
        Ok(())
    }
}

impl<T> Consumer<T> {
    pub fn pop(&mut self) -> Option<T> {
        let ring = &*self.ring;
        let head = ring.head.0.load(Ordering::Relaxed);
        let tail = ring.tail.0.load(Ordering::Acquire);
        if head == tail {
            return None;
        }
        // SAFETY: the slot at head was written and published by the producer
        // (tail, Acquire above); only this consumer reads slots.
        let value = ring.slots[head & ring.mask].with_mut(|slot| unsafe { (*slot).assume_init_read() });
        ring.head.0.store(head.wrapping_add(1), Ordering::Release);
        Some(value)
    }

    pub fn is_empty(&self) -> bool {
        self.ring.head.0.load(Ordering::Relaxed) == self.ring.tail.0.load(Ordering::Acquire)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_refuses_when_full() {
        let (mut producer, mut consumer) = channel(3);
        for i in 0..4 {
            producer.push(i).unwrap();
        }
        assert_eq!(producer.push(9), Err(9));
        assert_eq!(consumer.pop(), Some(0));
        producer.push(4).unwrap();
        assert_eq!((1..5).map(|_| consumer.pop().unwrap()).collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert!(consumer.is_empty());
        assert_eq!(consumer.pop(), None);
    }

    #[test]
    fn passes_every_value_between_threads_once() {
        let (mut producer, mut consumer) = channel::<Arc<u64>>(64);
        let shared = Arc::new(7u64);
        let count = 200_000u64;
        let sender = {
            let shared = shared.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                while i < count {
                    if producer.push(shared.clone()).is_ok() {
                        i += 1;
                    }
                }
            })
        };
        let mut received = 0;
        while received < count {
            if let Some(value) = consumer.pop() {
                assert_eq!(*value, 7);
                received += 1;
            }
        }
        sender.join().unwrap();
        assert_eq!(Arc::strong_count(&shared), 1, "every value dropped once");
    }

    #[test]
    fn drops_what_was_never_popped() {
        let shared = Arc::new(());
        let (mut producer, consumer) = channel(8);
        producer.push(shared.clone()).unwrap();
        producer.push(shared.clone()).unwrap();
        drop((producer, consumer));
        assert_eq!(Arc::strong_count(&shared), 1);
    }
}
