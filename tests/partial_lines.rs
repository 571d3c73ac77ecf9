//! A partial line held by an `append` descriptor, and the close(2) that
//! commits it. These tests hold such a line open, so they are alone in
//! their binary and run one at a time: a fork and exec anywhere in the
//! process (another test starting a daemon, a shell) gives the child a
//! copy of every descriptor, closes it at exec, and the kernel sends the
//! daemon a FLUSH for that close, which commits the held line early. (A
//! writer that spawns processes while it holds a partial line sees the
//! same: see the README, "append".)

mod common;

use common::mount::{sh, Mounted};
use std::fs::OpenOptions;
use std::io::{Read, Write};

/// Held through a test: no other test forks while it holds a line.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[test]
fn one_write_is_one_frame_and_partial_lines_wait_for_close() {
    let _one = one_at_a_time();
    let m = Mounted::start(&[]);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path("append"))
        .unwrap();
    assert_eq!(f.write(b"one\ntwo\nthree\npart").unwrap(), 18);
    // Read-back on an O_RDWR handle tells the ids the write received
    // (each line once, whatever the file position).
    let mut ids = String::new();
    f.read_to_string(&mut ids).unwrap();
    assert_eq!(ids, "0-2\n");
    let mut again = String::new();
    f.read_to_string(&mut again).unwrap();
    assert_eq!(again, "", "already read");
    assert_eq!(
        std::fs::read_to_string(m.path("log")).unwrap(),
        "one\ntwo\nthree\n",
        "partial line not yet committed"
    );
    f.write_all(b"ial\nx").unwrap();
    drop(f);
    assert_eq!(
        std::fs::read_to_string(m.path("log")).unwrap(),
        "one\ntwo\nthree\npartial\nx"
    );
    assert_eq!(std::fs::read(m.path("entries/3")).unwrap(), b"partial\n");
    assert_eq!(
        std::fs::read(m.path("entries/4")).unwrap(),
        b"x",
        "close commits the trailing partial line"
    );
    // One frame for the first write: the segment holds 3 frames.
    let seg = std::fs::read(m.path("segments/00000000000000000000.wal")).unwrap();
    let mut frames = 0;
    let mut at = 0;
    while at + 32 <= seg.len() {
        frames += 1;
        at += 32 + u32::from_le_bytes(seg[at + 21..at + 25].try_into().unwrap()) as usize;
    }
    assert_eq!(frames, 3);
}

#[test]
fn close_reports_the_failure_of_the_commit_it_triggers() {
    let _one = one_at_a_time();
    let m = Mounted::start(&[]);
    std::fs::create_dir(m.path("streams/tmp")).unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("streams/tmp/append"))
        .unwrap();
    // A partial line waits in the handle for close(2) to commit it...
    f.write_all(b"no newline yet").unwrap();
    // ...but its stream is deleted first.
    std::fs::remove_dir(m.path("streams/tmp")).unwrap();
    use std::os::unix::io::IntoRawFd;
    let fd = f.into_raw_fd();
    // SAFETY: closing a descriptor we own, once.
    let rc = unsafe { libc::close(fd) };
    let err = std::io::Error::last_os_error().raw_os_error();
    assert_eq!(rc, -1, "close(2) must fail when its commit fails");
    assert!(err.is_some_and(|e| e != 0), "{err:?}");
    // The daemon is fine.
    sh(&format!("echo ok >> {}", m.path("append").display()));
    assert_eq!(std::fs::read(m.path("entries/0")).unwrap(), b"ok\n");
}

#[test]
fn a_fork_and_exec_while_a_line_is_held_commits_it() {
    // What the README says of a writer that spawns a process: the child's
    // copy of the descriptor is closed at exec, that close commits the held
    // line, and what follows is an entry of its own. Nothing is lost.
    let _one = one_at_a_time();
    let m = Mounted::start(&[]);
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("append"))
        .unwrap();
    f.write_all(b"part").unwrap();
    assert!(
        std::fs::read(m.path("entries/0")).is_err(),
        "held until a close"
    );
    let s = std::process::Command::new("true").status().unwrap();
    assert!(s.success());
    assert_eq!(std::fs::read(m.path("entries/0")).unwrap(), b"part");
    f.write_all(b"ial\n").unwrap();
    drop(f);
    assert_eq!(std::fs::read(m.path("entries/1")).unwrap(), b"ial\n");
    assert_eq!(std::fs::read_to_string(m.path("log")).unwrap(), "partial\n");
}
