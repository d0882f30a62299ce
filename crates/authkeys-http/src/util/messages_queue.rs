use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

enum Control<T> {
    Elem(T),
    Unblock,
}

pub struct MessagesQueue<T>
where
    T: Send,
{
    queue: Mutex<Queue<T>>,
    condvar: Condvar,
}

// authkeys patch: the queue counts the threads waiting in `pop`, so that a push wakes one only
// when there is one to wake, and wakes it after unlocking. Upstream notified on every push,
// while holding the lock: one futex call per request even with every worker busy, and the
// woken worker's first act was to block on the lock the pusher still held.
struct Queue<T> {
    elements: VecDeque<Control<T>>,
    waiting: usize,
}

impl<T> MessagesQueue<T>
where
    T: Send,
{
    pub fn with_capacity(capacity: usize) -> Arc<MessagesQueue<T>> {
        Arc::new(MessagesQueue {
            queue: Mutex::new(Queue {
                elements: VecDeque::with_capacity(capacity),
                waiting: 0,
            }),
            condvar: Condvar::new(),
        })
    }

    /// Pushes an element to the queue.
    pub fn push(&self, value: T) {
        self.push_control(Control::Elem(value));
    }

    /// Unblock one thread stuck in pop loop.
    pub fn unblock(&self) {
        self.push_control(Control::Unblock);
    }

    fn push_control(&self, control: Control<T>) {
        let mut queue = self.queue.lock().unwrap();
        queue.elements.push_back(control);
        // A thread counted here is inside `Condvar::wait` (it counts itself and waits under
        // the lock), so the notification cannot be lost; one counted but already woken is
        // notified again, which only costs a wake-up.
        let someone_waits = queue.waiting > 0;
        drop(queue);
        if someone_waits {
            self.condvar.notify_one();
        }
    }

    /// Pops an element. Blocks until one is available.
    /// Returns None in case unblock() was issued.
    pub fn pop(&self) -> Option<T> {
        let mut queue = self.queue.lock().unwrap();

        loop {
            match queue.elements.pop_front() {
                Some(Control::Elem(value)) => return Some(value),
                Some(Control::Unblock) => return None,
                None => (),
            }

            queue.waiting += 1;
            queue = self.condvar.wait(queue).unwrap();
            queue.waiting -= 1;
        }
    }

    /// Tries to pop an element without blocking.
    pub fn try_pop(&self) -> Option<T> {
        let mut queue = self.queue.lock().unwrap();
        match queue.elements.pop_front() {
            Some(Control::Elem(value)) => Some(value),
            Some(Control::Unblock) | None => None,
        }
    }

    /// Tries to pop an element without blocking
    /// more than the specified timeout duration
    /// or unblock() was issued
    pub fn pop_timeout(&self, timeout: Duration) -> Option<T> {
        let mut queue = self.queue.lock().unwrap();
        let mut duration = timeout;
        loop {
            match queue.elements.pop_front() {
                Some(Control::Elem(value)) => return Some(value),
                Some(Control::Unblock) => return None,
                None => (),
            }
            let now = Instant::now();
            queue.waiting += 1;
            let (_queue, result) = self.condvar.wait_timeout(queue, timeout).unwrap();
            queue = _queue;
            queue.waiting -= 1;
            let sleep_time = now.elapsed();
            duration = if duration > sleep_time {
                duration - sleep_time
            } else {
                Duration::from_millis(0)
            };
            if result.timed_out()
                || (duration.as_secs() == 0 && duration.subsec_nanos() < 1_000_000)
            {
                return None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MessagesQueue;
    use std::sync::mpsc;
    use std::sync::Arc;
    use std::time::Duration;

    /// Pushers racing poppers that keep going to sleep: a lost notification would leave an
    /// element queued with every popper asleep, and the test would wait forever for it.
    #[test]
    fn every_element_reaches_one_popper_and_unblock_wakes_each() {
        const POPPERS: usize = 8;
        const PUSHERS: usize = 4;
        const EACH: usize = 20_000;
        let queue = MessagesQueue::with_capacity(8);
        let (popped, received) = mpsc::channel();
        let poppers: Vec<_> = (0..POPPERS)
            .map(|_| {
                let (queue, popped) = (Arc::clone(&queue), popped.clone());
                std::thread::spawn(move || {
                    while let Some(value) = queue.pop() {
                        popped.send(value).unwrap();
                    }
                })
            })
            .collect();
        let pushers: Vec<_> = (0..PUSHERS)
            .map(|pusher| {
                let queue = Arc::clone(&queue);
                std::thread::spawn(move || {
                    for n in 0..EACH {
                        queue.push(pusher * EACH + n);
                        if n % 64 == 0 {
                            // Let the poppers drain the queue and go back to sleep.
                            std::thread::sleep(Duration::from_micros(50));
                        }
                    }
                })
            })
            .collect();
        for pusher in pushers {
            pusher.join().unwrap();
        }
        let mut seen = vec![false; PUSHERS * EACH];
        for _ in 0..PUSHERS * EACH {
            let value = received
                .recv_timeout(Duration::from_secs(10))
                .expect("an element stayed queued while the poppers slept");
            assert!(
                !std::mem::replace(&mut seen[value], true),
                "{} twice",
                value
            );
        }
        for _ in 0..POPPERS {
            queue.unblock();
        }
        for popper in poppers {
            popper.join().unwrap();
        }
    }
}
