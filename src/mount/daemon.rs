//! `walfs mount`: the foreground daemon around the view.
//!
//! SIGINT, SIGTERM and SIGHUP are blocked in every thread and taken by one
//! thread with sigwait, which unmounts; `umount`/`fusermount3 -u` end the
//! session the same way. Either way the log is synced and closed before the
//! process exits. Kernel caches of growing files are invalidated after
//! commits from a thread of their own: invalidating from a request handler
//! can deadlock against the kernel.

use super::backend::{open_sharded, root_stream, Backend};
use super::fuse::WalFs;
use super::http::{bind_metrics, serve_metrics};
use super::view::View;
use crate::{CompressionType, SyncMode};
use fuser::{Config, MountOption, SessionACL};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::config::fail;
pub use super::config::{MountConfig, MountError};

/// Blocks the termination signals in this thread and every thread it
/// starts afterwards, so only the signal thread receives them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; all-zero bytes are a valid value,
    // and sigemptyset below gives it its defined empty state anyway.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a live sigset_t of ours; the call only writes it.
    unsafe { libc::sigemptyset(&mut set) };
    for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `set` is initialized (above) and `s` a valid signal.
        unsafe { libc::sigaddset(&mut set, s) };
    }
    // SAFETY: `set` is initialized; a null old-set pointer is allowed and
    // the call touches no other memory of ours.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    set
}

fn umount_detach(path: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: a valid C string; umount2 touches no memory of ours.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    // Not root: the setuid helper can do it for the user who mounted.
    for helper in ["fusermount3", "fusermount"] {
        if let Ok(s) = std::process::Command::new(helper)
            .arg("-uz")
            .arg(path)
            .status()
        {
            if s.success() {
                return Ok(());
            }
        }
    }
    Err(e)
}

/// What a live walfs mount on `mp` shows (its data directory or bucket),
/// from /proc/self/mountinfo (the last mount on it is the one seen).
fn walfs_mounted_on(mp: &Path) -> Option<String> {
    let target = mp
        .to_str()?
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let line = info
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(target.as_str()))?;
    // After the " - " separator: fstype, source, options.
    let mut rest = line.split(" - ").nth(1)?.split(' ');
    let (fstype, source) = (rest.next()?, rest.next()?);
    // fuse.walfs through mount.fuse3; "fuse" with our fsname through mount(2).
    (fstype == "fuse.walfs" || (fstype.starts_with("fuse") && source.starts_with("walfs:")))
        .then(|| source.strip_prefix("walfs:").unwrap_or(source).to_owned())
}

/// Checks the mountpoint, cleaning a stale mount left by a killed daemon.
fn check_mountpoint(mp: &Path) -> Result<PathBuf, MountError> {
    // A killed daemon's mount answers ENOTCONN, but a stat may still be
    // served from the attributes the kernel cached: listing it tells.
    let probe = std::fs::metadata(mp).and_then(|m| std::fs::read_dir(mp).map(|_| m));
    match probe {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            log::warn!(
                "{} is a stale mount left by a walfs that was killed; unmounting it",
                mp.display()
            );
            if let Err(e) = umount_detach(mp) {
                return fail(format!(
                    "{} is a stale mount (transport endpoint is not connected) and could not be unmounted ({e}): run `umount -l {0}` or `fusermount3 -uz {0}`",
                    mp.display()
                ));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return fail(format!(
                "mountpoint {} does not exist: create it with `mkdir -p {0}`",
                mp.display()
            ))
        }
        Err(e) => return fail(format!("cannot use mountpoint {}: {e}", mp.display())),
        Ok(m) if !m.is_dir() => {
            return fail(format!("mountpoint {} is not a directory", mp.display()))
        }
        Ok(_) => {}
    }
    let mp = mp
        .canonicalize()
        .map_err(|e| MountError(format!("cannot use mountpoint {}: {e}", mp.display())))?;
    if let Some(source) = walfs_mounted_on(&mp) {
        return fail(format!(
            "{} is already a walfs mount (of {source}): unmount it first (`umount {0}`), or mount elsewhere",
            mp.display()
        ));
    }
    match std::fs::read_dir(&mp) {
        Ok(mut d) => {
            if d.next().is_some() {
                return fail(format!(
                    "mountpoint {} is not empty: mount on an empty directory",
                    mp.display()
                ));
            }
        }
        Err(e) => return fail(format!("cannot read mountpoint {}: {e}", mp.display())),
    }
    Ok(mp)
}

/// Mounts and serves until unmounted or signalled; returns once the log is
/// closed with everything acknowledged on disk.
pub fn mount(cfg: MountConfig) -> Result<(), MountError> {
    let signals = block_signals();
    let mp = check_mountpoint(&cfg.mountpoint)?;
    if let Some(s) = cfg
        .stream
        .as_ref()
        .filter(|s| !crate::format::validate_stream_name(s))
    {
        return fail(format!(
            "invalid stream name {s:?} for --stream: use 1-255 bytes of [A-Za-z0-9._-], not \".\" or \"..\""
        ));
    }
    if cfg.follow.is_some() {
        let mut mounted = false;
        let label = cfg.data.clone();
        return serve(&cfg, &label, &mp, signals, &mut mounted);
    }
    // Every check comes before anything is created: a refused mount leaves
    // no trace (a data directory made inside the mountpoint would make the
    // next, correct mount fail on a non-empty mountpoint).
    let data = absolute(&cfg.data).map_err(|e| {
        MountError(format!(
            "cannot use data directory {}: {e}",
            cfg.data.display()
        ))
    })?;
    if data.starts_with(&mp) {
        return fail(format!(
            "data directory {} is inside the mountpoint {}: keep the data outside the mount",
            cfg.data.display(),
            mp.display()
        ));
    }
    let created = match std::fs::metadata(&data) {
        Ok(m) if m.is_dir() => None,
        Ok(_) => {
            return fail(format!(
                "data directory {} is not a directory",
                cfg.data.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && cfg.read_only => {
            return fail(format!(
                "data directory {} does not exist (a --read-only mount creates nothing)",
                cfg.data.display()
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(first_missing(&data)),
        Err(e) => {
            return fail(format!(
                "cannot use data directory {}: {e}",
                cfg.data.display()
            ))
        }
    };
    let mut mounted = false;
    let served = serve(&cfg, &data, &mp, signals, &mut mounted);
    if let (Err(_), Some(top), false) = (&served, &created, mounted) {
        // Refused before mounting, after creating the data directory (so
        // nothing was ever acknowledged into it): take it back.
        if let Err(e) = std::fs::remove_dir_all(top) {
            log::warn!(
                "could not remove {} made by this refused mount: {e}",
                top.display()
            );
        }
    }
    served
}

/// Lets the kernel read ahead up to 1 MiB on this mount, as much as one
/// FUSE request carries here (its default is 128 KiB): sequential reads of
/// `entries/` and `segments/` take an eighth of the requests. Only root
/// may; for anyone else nothing changes. The device comes from
/// /proc/self/mountinfo: a stat of the mountpoint from this process would
/// ask the daemon itself.
fn raise_readahead(mp: &Path) {
    let Some(target) = mp.to_str() else {
        return;
    };
    let escaped = target
        .replace('\\', "\\134")
        .replace(' ', "\\040")
        .replace('\t', "\\011")
        .replace('\n', "\\012");
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let Some(dev) = info
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f.get(4) == Some(&escaped.as_str())).then(|| f.get(2).map(|d| d.to_string()))
        })
        .next_back()
        .flatten()
    else {
        return;
    };
    let knob = format!("/sys/class/bdi/{dev}/read_ahead_kb");
    if let Err(e) = std::fs::write(&knob, b"1024") {
        log::debug!("read-ahead stays at the kernel's default ({knob}: {e})");
    }
}

/// `p` made absolute with its existing part resolved (symlinks followed),
/// whether or not the rest exists yet.
fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    let p = std::path::absolute(p)?;
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(c) => return Ok(rest.iter().rev().fold(c, |acc: PathBuf, n| acc.join(n))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(e);
                };
                rest.push(name.to_owned());
                existing = parent;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The outermost directory of `p` that does not exist yet.
fn first_missing(p: &Path) -> PathBuf {
    let mut top = p.to_path_buf();
    while let Some(parent) = top.parent() {
        if parent.as_os_str().is_empty() || parent.exists() {
            break;
        }
        top = parent.to_path_buf();
    }
    top
}

fn serve(
    cfg: &MountConfig,
    data: &Path,
    mp: &Path,
    signals: libc::sigset_t,
    mounted: &mut bool,
) -> Result<(), MountError> {
    let mp = mp.to_path_buf();
    let (wal, standby) = super::backend::open(cfg, data)?;
    let read_only = cfg.read_only || cfg.follow.is_some();
    let sharded: Option<Arc<dyn crate::sharded::CheckpointSource>> = match &wal {
        Backend::Local(w) => open_sharded(w, data, cfg.shards)?.map(|s| s as _),
        Backend::Bucket(_) if cfg.shards.is_some() => {
            return fail("--shards applies to a local data directory, not to a bucket".into())
        }
        Backend::Bucket(b) => Some(Arc::new(crate::replica::follow::BucketCheckpoints::of(
            b.clone(),
        ))),
    };
    let source = wal.source();
    // A sharded log shows its shards under streams/ and makes no `default`.
    let root = match (&sharded, cfg.stream.as_deref()) {
        (Some(s), None) if s.shown() => None,
        _ => root_stream(
            source.as_ref(),
            data,
            cfg.stream.as_deref(),
            read_only,
            cfg.follow.is_some(),
        )?,
    };
    let mut view = View::with_root(source.clone(), root.as_deref(), read_only)
        .map_err(|e| MountError(format!("cannot show the log: {e}")))?
        .with_modes(cfg.file_mode, cfg.dir_mode);
    if let Some(s) = sharded {
        view = view.with_sharded(s);
    }
    let view = Arc::new(view);

    let metrics = match &cfg.metrics {
        Some(addr) => Some(bind_metrics(addr)?),
        None => None,
    };

    let mut options = vec![
        MountOption::FSName(format!("walfs:{}", data.display())),
        MountOption::Subtype("walfs".into()),
        MountOption::NoAtime,
    ];
    if read_only {
        options.push(MountOption::RO);
    }
    // The kernel enforces the modes the tree shows, for the owner too: what
    // `ls -l` says is what is allowed.
    options.push(MountOption::DefaultPermissions);
    let mut config = Config::default();
    config.mount_options = options;
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(cfg.threads.max(1));
    config.clone_fd = cfg.threads > 1;
    let fs = WalFs::new(view.clone(), cfg.uid, cfg.gid, cfg.passthrough);
    let fs_unmounter = fs.unmounter.clone();
    let mut session = fuser::Session::new(fs, &mp, &config)
        .map_err(|e| MountError(format!("cannot mount on {}: {e}{}", mp.display(), hint(&e))))?;
    *mounted = true;
    let how = if cfg.follow.is_some() {
        "read-only, following the bucket".to_string()
    } else if cfg.read_only {
        "read-only".to_string()
    } else {
        let sync = match cfg.sync {
            SyncMode::Strict => "strict",
            SyncMode::BatchOnly => "batch",
            SyncMode::Async => "async",
        };
        let compression = match cfg.compression {
            CompressionType::None => "none",
            CompressionType::Lz4 => "lz4",
        };
        let replica = match &cfg.replicate {
            Some(r) if cfg.standby => format!(
                ", standing by for {} (read-only until its holder's lease lapses)",
                r.url
            ),
            Some(r) => format!(
                ", replicating to {} ({})",
                r.url,
                match r.mode {
                    crate::ReplicaMode::Async => "async",
                    crate::ReplicaMode::Strict => "strict",
                }
            ),
            None => String::new(),
        };
        format!("sync {sync}, compression {compression}{replica}")
    };
    let shown = match &root {
        Some(s) => format!("stream {s}"),
        None => format!(
            "no stream at the root: {} under streams/",
            source.streams().len()
        ),
    };
    raise_readahead(&mp);
    log::info!(
        "ready: {} mounted on {} ({shown}, {how}{})",
        data.display(),
        mp.display(),
        if cfg.allow_other { ", allow-other" } else { "" }
    );
    if let Some(server) = metrics {
        serve_metrics(server, view.clone())?;
    }
    // systemd's Type=notify: READY=1 once the mount serves (a no-op
    // without NOTIFY_SOCKET).
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        log::warn!("could not tell systemd the mount is ready: {e}");
    }

    // fuser unmounts what it mounted when the session ends, unless told it
    // is done: the stop below and a `umount` from outside both leave it
    // nothing to do (and nothing to warn about).
    *fs_unmounter.lock() = Some(session.unmount_callable());
    let mut unmounter_sig = session.unmount_callable();
    let (view_sig, wal_sig, mp_sig) = (view.clone(), wal.clone(), mp.clone());
    std::thread::Builder::new()
        .name("walfs-signals".into())
        .spawn(move || {
            let mut sig = 0;
            // SAFETY: `signals` is the set blocked in every thread of the
            // process (block_signals ran before any other thread started),
            // and `sig` is a live local the call writes to.
            if unsafe { libc::sigwait(&signals, &mut sig) } == 0 {
                stop_on_signal(sig, &view_sig, &wal_sig, &mp_sig, &mut unmounter_sig);
            }
        })
        .map_err(|e| MountError(format!("cannot start the signal thread: {e}")))?;

    let stop = Arc::new(AtomicBool::new(false));
    let invalidator = super::invalidate::spawn(view.clone(), session.notifier(), stop.clone())?;

    let retention = match &wal {
        Backend::Local(w) if !read_only => {
            super::retain::spawn(view.clone(), w.clone(), stop.clone())
                .map_err(|e| MountError(format!("cannot start the retention thread: {e}")))?
        }
        _ => None,
    };

    let served = session.run();
    stop.store(true, Ordering::Release);
    let _ = invalidator.join();
    if let Some(r) = retention {
        let _ = r.join();
    }
    drop(view);
    drop(standby);
    if let Err(e) = served {
        log::error!("the FUSE session ended with an error: {e}");
    }
    wal.close()
        .map_err(|e| MountError(format!("closing the log failed: {e}")))?;
    if cfg.follow.is_some() {
        log::info!("stopped: {} unmounted; no longer following", mp.display());
    } else {
        log::info!(
            "stopped: {} unmounted; the log is closed with everything acknowledged on disk",
            mp.display()
        );
    }
    Ok(())
}

/// How long a stop waits for files open for writing to close.
const STOP_DRAIN: Duration = Duration::from_secs(5);
/// How long a stop watches for writers after the open files closed.
const STOP_QUIET: Duration = Duration::from_millis(300);

/// A stop signal: drain, then unmount, and never let a write succeed
/// anywhere but in the log.
///
/// New changes are refused with ESHUTDOWN while files open for writing
/// close (bounded by STOP_DRAIN). If no writer showed up, the mount is
/// unmounted and the session ends as after `umount`. If writers
/// are still at work, unmounting would let their next `>> append` create a
/// plain file in the directory underneath and succeed there; instead the
/// log is synced and the process exits without unmounting, so the kernel
/// answers every further request with ENOTCONN until someone runs `umount`
/// (the next `walfs mount` on the same mountpoint does it).
fn stop_on_signal(
    sig: i32,
    view: &View,
    wal: &Backend,
    mp: &Path,
    unmounter: &mut fuser::SessionUnmounter,
) {
    log::debug!(
        "signal {sig}: stopping; new writes to {} are refused while open files close",
        mp.display()
    );
    view.begin_stop();
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let deadline = std::time::Instant::now() + STOP_DRAIN;
    while view.open_writers() > 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(STOP_QUIET);
    let (open, refused) = (view.open_writers(), view.refused_changes());
    if open == 0 && refused == 0 {
        // No writer: a detaching unmount can let nothing slip through, and
        // readers still holding files (`tail -f`) do not block it.
        if let Err(e) = unmounter.unmount() {
            log::warn!("unmounting {} failed: {e}", mp.display());
        }
        return;
    }
    let synced = wal.sync_all();
    log::warn!(
        "writers were still at work ({refused} change(s) refused, {open} file(s) open for writing): {0} is left disconnected, so their writes fail (ENOTCONN) instead of landing in the directory underneath; run `umount {0}` once they have stopped (the next `walfs mount` on it does that)",
        mp.display()
    );
    match synced {
        Ok(()) => {
            log::info!("the log is synced: everything acknowledged is on disk");
            std::process::exit(0)
        }
        Err(e) => {
            log::error!("syncing the log failed: {e}");
            std::process::exit(1)
        }
    }
}

fn hint(e: &std::io::Error) -> &'static str {
    // SAFETY: access(2) reads the NUL-terminated constant path only.
    let fuse_usable = unsafe { libc::access(c"/dev/fuse".as_ptr(), libc::R_OK | libc::W_OK) } == 0;
    // SAFETY: getuid takes no arguments, touches no memory, cannot fail.
    let root = unsafe { libc::getuid() } == 0;
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) if !root && !fuse_usable => {
            " (/dev/fuse is not readable and writable by this user: run as root, or have root `chmod 666 /dev/fuse`, the usual mode)"
        }
        Some(libc::EPERM) | Some(libc::EACCES) => " (run as root, or install fusermount3 from the fuse3 package)",
        Some(libc::ENOENT) | Some(libc::ENODEV) => " (is /dev/fuse present? `modprobe fuse`)",
        _ => "",
    }
}
