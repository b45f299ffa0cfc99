//! The mailbox of an I/O thread: the commands other threads (the accept
//! loop, senders, `close()`) post to it, and the waker that interrupts its
//! poll.

use std::sync::Mutex;

use mio::Waker;
use socket2::Socket;

use crate::server::event::dialer::{DialOp, DialPost, Dialer};
use crate::util::sync::lock;

/// What other threads ask of an I/O thread.
pub(crate) enum Command {
    Adopt(Socket, String),
    Flush(usize, u64),
    Close(usize, u64),
    /// A dialer's request (`Server::dial` and the [`Dialer`]'s methods).
    Dial(DialOp, std::sync::Arc<Dialer>),
    Stop,
}

/// The mailbox of an I/O thread.
pub struct Inbox {
    commands: Mutex<Vec<Command>>,
    waker: Waker,
}

thread_local! {
    /// The inbox of the I/O thread running on this thread, if any: posting
    /// to your own inbox needs no wake-up, as the loop drains it anyway.
    pub(super) static OWN_INBOX: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

impl Inbox {
    pub(super) fn new(waker: Waker) -> Inbox {
        Inbox {
            commands: Mutex::new(Vec::new()),
            waker,
        }
    }

    pub fn post(&self, command: Command) {
        let first = {
            let mut commands = lock(&self.commands);
            commands.push(command);
            commands.len() == 1
        };
        let own = OWN_INBOX.with(|c| c.get()) == self as *const Inbox as usize;
        if first && !own {
            let _ = self.waker.wake();
        }
    }

    pub fn flush(&self, token: usize, id: u64) {
        self.post(Command::Flush(token, id));
    }

    pub fn close(&self, token: usize, id: u64) {
        self.post(Command::Close(token, id));
    }

    pub(super) fn is_empty(&self) -> bool {
        lock(&self.commands).is_empty()
    }

    pub(super) fn take(&self) -> Vec<Command> {
        std::mem::take(&mut *lock(&self.commands))
    }
}

impl DialPost for Inbox {
    fn post_dial(&self, op: DialOp, dialer: std::sync::Arc<Dialer>) {
        self.post(Command::Dial(op, dialer));
    }
}
