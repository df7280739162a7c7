//! Every interleaving of one producer thread and one consumer thread on a
//! small ring (loom explores them all, and reports a data race on a slot, a
//! value read before it was written, or a value dropped twice or never).
//! Run: `cd tests/engine/ring_loom && RUSTFLAGS="--cfg loom" cargo test --release`.
#![cfg(loom)]

use fanout_ring_loom::ring::channel;
use loom::sync::Arc;
use loom::thread;

#[test]
fn values_cross_in_order_exactly_once_even_when_the_ring_fills() {
    loom::model(|| {
        let (mut producer, mut consumer) = channel::<Arc<u32>>(2);
        let values: Vec<Arc<u32>> = (0..3).map(Arc::new).collect();
        let sent = values.clone();
        let sender = thread::spawn(move || {
            for mut value in sent {
                // A full ring gives the value back (the receiver counts an overrun); here it tries again.
                while let Err(refused) = producer.push(value) {
                    value = refused;
                    thread::yield_now();
                }
            }
        });
        let mut received = Vec::new();
        while received.len() < 3 {
            match consumer.pop() {
                Some(value) => received.push(*value),
                None => thread::yield_now(),
            }
        }
        sender.join().unwrap();
        assert_eq!(received, [0, 1, 2]);
        assert!(consumer.is_empty());
        drop(consumer);
        for value in &values {
            assert_eq!(Arc::strong_count(value), 1, "every pushed value dropped once");
        }
    });
}

#[test]
fn values_left_in_the_ring_are_dropped_with_it() {
    loom::model(|| {
        let (mut producer, consumer) = channel::<Arc<u32>>(2);
        let value = Arc::new(7);
        let pushed = value.clone();
        let sender = thread::spawn(move || {
            producer.push(pushed).unwrap();
        });
        let receiver = thread::spawn(move || drop(consumer));
        sender.join().unwrap();
        receiver.join().unwrap();
        assert_eq!(Arc::strong_count(&value), 1);
    });
}
