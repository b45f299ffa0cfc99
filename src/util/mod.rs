//! Small shared helpers with no protocol in them: the one lock helper and
//! the atomic timeout cell.
//!
//! May use: `error`, `addr`, `sys`.

pub(crate) mod sync;
pub(crate) mod timeout_cell;
