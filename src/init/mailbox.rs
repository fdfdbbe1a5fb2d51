//! A queue between the core's thread and the runtime's, with an eventfd
//! to wake the reader (the runtime registers it with its reactor) and, for
//! the core, a [`Bell`]: the core sleeps in `read` on its signalfd, which
//! only a signal ends, so its mailbox also rings a signal at it. No tokio
//! here.
//!
//! A sender sets [`Mailbox::pending`], writes the eventfd and rings the
//! bell only when the queue goes from empty to non-empty, so a burst of
//! messages costs one wake-up. The reader clears both *before* it takes
//! the queue: a message pushed after the take finds the queue empty and
//! wakes it again, so none is left unseen; one pushed between the clear
//! and the take is taken, and its wake-up costs at most one spurious
//! wake-up with an empty queue. The core, woken by any signal, looks at
//! `pending` (an atomic, no lock) and takes the queue only when it is set.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Messages of type `T` from one thread to another.
pub struct Mailbox<T> {
    queue: Mutex<VecDeque<T>>,
    /// Non-blocking, close-on-exec: a child never inherits it.
    wake: OwnedFd,
    /// Also rung when the queue becomes non-empty, for a reader blocked on
    /// its signalfd; the eventfd is still written, for a reader whose
    /// signalfd failed (it falls back to `poll` on the eventfd).
    bell: Option<Bell>,
    /// Set with the wake-up, cleared by the take: a reader that was woken
    /// by anything can see without the lock whether messages wait.
    pending: AtomicBool,
}

/// A signal to one thread of this process (`tgkill`), made by
/// [`crate::init::signals::Receiver::bell`].
#[derive(Debug, Clone, Copy)]
pub struct Bell {
    pub pid: libc::pid_t,
    pub tid: libc::pid_t,
    pub sig: i32,
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
            bell: None,
            pending: AtomicBool::new(false),
        })
    }

    /// This mailbox also rings `bell` when it becomes non-empty.
    pub fn with_bell(mut self, bell: Bell) -> Mailbox<T> {
        self.bell = Some(bell);
        self
    }

    /// Queues `msg` and wakes the reader if the queue was empty.
    pub fn send(&self, msg: T) {
        let mut queue = self.lock();
        queue.push_back(msg);
        if queue.len() == 1 {
            self.pending.store(true, Ordering::Release);
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes we own to our eventfd. It cannot fail
            // short of a counter at u64::MAX - 1, which one write per empty
            // queue never reaches.
            unsafe { libc::write(self.wake.as_raw_fd(), one.as_ptr().cast(), one.len()) };
            if let Some(bell) = self.bell {
                ring(bell);
            }
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
        let mut queue = self.lock();
        self.pending.store(false, Ordering::Relaxed);
        std::mem::take(&mut *queue)
    }

    /// Whether messages wait (set before the wake-up of the send that
    /// queued the first of them).
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<T>> {
        // A panic while holding the lock cannot leave a half-pushed queue.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn ring(bell: Bell) {
    // SAFETY: tgkill(2) with plain integers. It cannot fail: the thread is
    // this process's and lives as long as the process (the core's main
    // thread), and a standard signal needs no queue room.
    unsafe { libc::syscall(libc::SYS_tgkill, bell.pid, bell.tid, bell.sig) };
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

    #[test]
    fn the_bell_rings_once_per_burst_at_the_reading_thread() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        // The reader: SIGCHLD blocked on its thread only, read from a
        // signalfd, as the core does.
        let reader = std::thread::spawn(move || {
            // SAFETY: a sigset we own; the mask of this thread only.
            let fd = unsafe {
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut mask);
                libc::sigaddset(&mut mask, libc::SIGCHLD);
                libc::pthread_sigmask(libc::SIG_BLOCK, &mask, std::ptr::null_mut());
                libc::signalfd(-1, &mask, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
            };
            assert!(fd >= 0);
            // SAFETY: getpid and gettid take nothing.
            let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
            tx.send(Bell {
                pid,
                tid,
                sig: libc::SIGCHLD,
            })
            .unwrap();
            wait.recv().unwrap();
            let mut rung = 0;
            loop {
                // SAFETY: an all-zero siginfo is a valid value.
                let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
                let size = std::mem::size_of_val(&info);
                // SAFETY: reads one record into the struct we own.
                let n = unsafe {
                    libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size)
                };
                if n != size as isize {
                    break;
                }
                if info.ssi_code == libc::SI_TKILL && info.ssi_pid == pid as u32 {
                    rung += 1;
                }
            }
            // SAFETY: our fd.
            unsafe { libc::close(fd) };
            rung
        });
        let bell = rx.recv().unwrap();
        let mailbox = Mailbox::new().unwrap().with_bell(bell);
        assert!(!mailbox.pending());
        for n in 0..3 {
            mailbox.send(n);
        }
        assert!(mailbox.pending(), "set by the first send");
        go.send(()).unwrap();
        assert_eq!(reader.join().unwrap(), 1, "one ring for a burst");
        assert_eq!(mailbox.take(), [0, 1, 2]);
        assert!(!mailbox.pending(), "cleared by the take");
    }
}
