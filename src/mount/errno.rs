//! The single mapping from an engine error to the errno a syscall returns
//! through the mount, and the one place such errors are logged.

use crate::Error;

/// An errno, as the kernel wants it.
pub type Errno = i32;

/// The errno for `e`. Damage and I/O failures are logged at ERROR (a
/// reader only sees EIO); the rest are ordinary answers, logged at DEBUG.
pub fn errno(e: &Error) -> Errno {
    let code = match e {
        Error::Io(io) => io.raw_os_error().unwrap_or(libc::EIO),
        Error::Corruption { .. } | Error::Damaged { .. } | Error::Poisoned { .. } => libc::EIO,
        Error::InvalidStreamName(_) => libc::EINVAL,
        Error::NoSuchStream(_) => libc::ENOENT,
        Error::StreamExists(_) => libc::EEXIST,
        Error::TooLarge { .. } => libc::EFBIG,
        Error::Locked { .. } => libc::EBUSY,
        Error::ReadOnly => libc::EROFS,
        Error::Config(_) => libc::EINVAL,
        Error::Fenced(_) => libc::ESTALE,
        Error::Replication(_) => libc::ETIMEDOUT,
        Error::CheckpointNotFound(_) | Error::NoCheckpoints => libc::ENOENT,
        Error::InvalidCheckpointId(_) => libc::EINVAL,
        Error::CheckpointCorrupted { .. } => libc::EIO,
        Error::ShardCountMismatch { .. } => libc::EINVAL,
    };
    match e {
        Error::Corruption { .. }
        | Error::CheckpointCorrupted { .. }
        | Error::Damaged { .. }
        | Error::Io(_)
        | Error::Fenced(_)
        | Error::Replication(_) => log::error!("{e}"),
        _ => log::debug!("{e}"),
    }
    code
}
