//! A queue between the core's thread and the runtime's, with an eventfd
//! to wake the reader: the core blocks on it in `poll` next to the
//! signalfd, the runtime registers it with its reactor. No tokio here.
//!
//! A sender writes the eventfd only when the queue goes from empty to
//! non-empty, so a burst of messages costs one wake-up. The reader clears
//! the eventfd *before* it takes the queue: a message pushed after the
//! take finds the queue empty and writes again, so none is left unseen;
//! one pushed between the clear and the take is taken, and its write
//! costs at most one spurious wake-up with an empty queue.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Messages of type `T` from one thread to another.
pub struct Mailbox<T> {
    queue: Mutex<VecDeque<T>>,
    /// Non-blocking, close-on-exec: a child never inherits it.
    wake: OwnedFd,
}

impl<T> Mailbox<T> {
    pub fn new() -> io::Result<Mailbox<T>> {
        // SAFETY: eventfd takes plain integers; the fd is checked, then owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Mailbox {
            queue: Mutex::new(VecDeque::new()),
            // SAFETY: `fd` was just opened and is owned by nothing else.
            wake: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Queues `msg` and wakes the reader if the queue was empty.
    pub fn send(&self, msg: T) {
        let mut queue = self.lock();
        queue.push_back(msg);
        if queue.len() == 1 {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes we own to our eventfd. It cannot fail
            // short of a counter at u64::MAX - 1, which one write per empty
            // queue never reaches.
            unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        }
    }

    /// Clears the wake-up, then takes every queued message, oldest first.
    pub fn take(&self) -> VecDeque<T> {
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into a buffer we own; EAGAIN (nothing to
        // clear) is fine.
        unsafe {
            libc::read(
                self.wake.as_raw_fd(),
                count.as_mut_ptr().cast(),
                count.len(),
            )
        };
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // A panic while holding the lock cannot leave a half-pushed queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T> AsFd for Mailbox<T> {
    /// The eventfd: readable while messages wait.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }
}

impl<T> AsRawFd for Mailbox<T> {
    /// The eventfd: readable while messages wait.
    fn as_raw_fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn readable(fd: RawFd) -> bool {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd we own, no wait.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }

    #[test]
    fn one_wake_up_for_a_burst_and_none_left_after_the_take() {
        let mailbox = Mailbox::new().unwrap();
        assert!(!readable(mailbox.as_raw_fd()));
        for n in 0..3 {
            mailbox.send(n);
        }
        assert!(readable(mailbox.as_raw_fd()));
        assert_eq!(mailbox.take(), [0, 1, 2]);
        assert!(!readable(mailbox.as_raw_fd()));
        assert!(mailbox.take().is_empty());
    }

    #[test]
    fn a_message_after_the_take_wakes_the_reader_again() {
        let mailbox = Mailbox::new().unwrap();
        mailbox.send('a');
        assert_eq!(mailbox.take(), ['a']);
        mailbox.send('b');
        assert!(readable(mailbox.as_raw_fd()));
        assert_eq!(mailbox.take(), ['b']);
    }

    #[test]
    fn messages_cross_threads_in_order() {
        let mailbox = std::sync::Arc::new(Mailbox::new().unwrap());
        let sender = std::sync::Arc::clone(&mailbox);
        let thread = std::thread::spawn(move || (0..1000).for_each(|n| sender.send(n)));
        let mut got = Vec::new();
        while got.len() < 1000 {
            let mut pfd = libc::pollfd {
                fd: mailbox.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own; waits at most 5 s.
            assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1, "woken");
            got.extend(mailbox.take());
        }
        thread.join().unwrap();
        assert_eq!(got, (0..1000).collect::<Vec<_>>());
    }
}
