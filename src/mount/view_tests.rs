//! The view's unit tests: no FUSE, the operations the kernel would send.

use super::*;

fn view(dir: &std::path::Path, segment_size: u64) -> View {
    let mut o = crate::WalOptions::new(dir);
    o.max_segment_size = segment_size;
    View::new(Wal::new(o).unwrap(), "default", false).unwrap()
}

fn append(v: &View, data: &[u8]) -> Result<u32, Errno> {
    let o = v.open(
        v.lookup(Node::Root, b"append")
            .map(|a| Node::from_ino(a.ino).unwrap())
            .unwrap(),
        false,
        true,
    )?;
    let r = v.write(o.fh, 0, data);
    v.release(o.fh);
    r
}

fn entries_node() -> Node {
    Node::In {
        sno: 0,
        root_view: true,
        kind: Kind::Entries,
        value: 0,
    }
}

fn node(v: &View, parent: Node, name: &[u8]) -> Node {
    Node::from_ino(v.lookup(parent, name).unwrap().ino).unwrap()
}

/// In Async mode, entries wait in memory for a few milliseconds; `stat`,
/// `entries/`, `log` and the ids read back must still agree at once.
#[test]
fn every_view_agrees_right_after_an_async_append() {
    let t = tempfile::tempdir().unwrap();
    let mut o = crate::WalOptions::new(t.path());
    o.sync_mode = SyncMode::Async;
    let v = View::new(Wal::new(o).unwrap(), "default", false).unwrap();
    let (stat, log) = (node(&v, Node::Root, b"stat"), node(&v, Node::Root, b"log"));
    let h = v.open(node(&v, Node::Root, b"append"), true, true).unwrap();
    let mut bytes = 0;
    for i in 0..300u64 {
        let line = format!("line {i}\n");
        v.write(h.fh, 0, line.as_bytes()).unwrap();
        bytes += line.len() as u64;
        let text = String::from_utf8(v.read(stat, 0, 0, 4096).unwrap()).unwrap();
        assert!(
            text.contains(&format!("next_id: {}\n", i + 1)),
            "after {i}: {text}"
        );
        assert_eq!(v.getattr(log).unwrap().size, bytes, "log size after {i}");
        assert!(v.lookup(entries_node(), i.to_string().as_bytes()).is_ok());
        assert_eq!(v.source().next_id("default"), i + 1);
    }
    let ids = v
        .read(node(&v, Node::Root, b"append"), h.fh, 0, 1 << 20)
        .unwrap();
    assert!(String::from_utf8(ids).unwrap().ends_with("299-299\n"));
    v.release(h.fh);
}

/// A write that fails poisons its handle: what it held is dropped, every
/// later write and the close fail, and no entry passes the bound.
#[test]
fn a_failed_write_commits_nothing_ever() {
    let t = tempfile::tempdir().unwrap();
    let v = view(t.path(), 64 << 20);
    let append = node(&v, Node::Root, b"append");
    // A held partial line that a later line would push past the bound.
    let h = v.open(append, false, true).unwrap();
    v.write(h.fh, 0, &vec![b'a'; MAX_RECORD - 1]).unwrap();
    assert_eq!(v.write(h.fh, 0, b"bc\n"), Err(libc::EFBIG));
    assert_eq!(v.write(h.fh, 0, b"later\n"), Err(libc::EFBIG));
    assert_eq!(v.fsync(append, h.fh), Err(libc::EFBIG));
    assert_eq!(v.flush(h.fh), Err(libc::EFBIG));
    v.release(h.fh);
    // A held partial line, then more bytes without a newline past the
    // bound (as `cat big >> append` hands them over): the held part is
    // never committed either.
    let h = v.open(append, false, true).unwrap();
    v.write(h.fh, 0, &vec![b'a'; MAX_RECORD - 1]).unwrap();
    assert_eq!(v.write(h.fh, 0, b"xy"), Err(libc::EFBIG));
    assert_eq!(v.flush(h.fh), Err(libc::EFBIG));
    v.release(h.fh);
    assert_eq!(
        v.source().next_id("default"),
        0,
        "the held prefix stays uncommitted"
    );
    // One write whose first line alone is too long: its other lines go too.
    let h = v.open(append, false, true).unwrap();
    let mut big = vec![b'b'; MAX_RECORD + 1];
    big.extend_from_slice(b"\nshort\n");
    assert_eq!(v.write(h.fh, 0, &big), Err(libc::EFBIG));
    assert_eq!(v.flush(h.fh), Err(libc::EFBIG));
    v.release(h.fh);
    // A record past the bound, then a write inside it.
    let record = node(&v, Node::Root, b"record");
    let h = v.open(record, false, true).unwrap();
    v.write(h.fh, 0, b"head").unwrap();
    assert_eq!(v.write(h.fh, MAX_RECORD as u64, b"x"), Err(libc::EFBIG));
    assert_eq!(v.write(h.fh, 4, b"tail"), Err(libc::EFBIG));
    assert_eq!(v.flush(h.fh), Err(libc::EFBIG));
    v.release(h.fh);
    assert_eq!(v.source().next_id("default"), 0, "nothing was committed");
    // A line of exactly the bound is fine.
    let mut line = vec![b'c'; MAX_RECORD - 1];
    line.push(b'\n');
    append_ok(&v, &line);
    assert_eq!(v.source().next_id("default"), 1);
}

/// A descriptor held open for many writes costs the daemon a bounded
/// amount: a write-only one keeps no ids at all, a read-write one at
/// most MAX_UNREAD_IDS of unread ones (and nothing once read).
#[test]
fn a_long_lived_descriptor_holds_bounded_ids() {
    use crate::mount::files::append::MAX_UNREAD_IDS;
    let t = tempfile::tempdir().unwrap();
    let mut o = crate::WalOptions::new(t.path());
    o.sync_mode = crate::SyncMode::Async;
    let v = View::new(Wal::new(o).unwrap(), "default", false).unwrap();
    let append = node(&v, Node::Root, b"append");
    let held = |fh: u64| match &*v.handle(fh).unwrap().lock() {
        Handle::Append(s) => s.ids_held(),
        _ => unreachable!(),
    };
    let wo = v.open(append, false, true).unwrap().fh;
    let rw = v.open(append, true, true).unwrap().fh;
    for i in 0..150_000u32 {
        let line = format!("{i}\n");
        v.write(wo, 0, line.as_bytes()).unwrap();
        v.write(rw, 0, line.as_bytes()).unwrap();
    }
    assert_eq!(held(wo), 0, "a write-only handle keeps no ids");
    assert!(held(rw) <= MAX_UNREAD_IDS, "{} bytes of ids", held(rw));
    assert!(held(rw) > MAX_UNREAD_IDS / 2, "the newest are kept");
    // The newest line is the last write's ids.
    let all = v.read(append, rw, 0, (2 * MAX_UNREAD_IDS) as u32).unwrap();
    let last = String::from_utf8(all).unwrap();
    assert!(
        last.ends_with("299999-299999\n"),
        "{}",
        &last[last.len() - 40..]
    );
    // Old ones went as whole lines: every line is "FIRST-LAST".
    assert!(
        last.lines().all(|l| l
            .split_once('-')
            .is_some_and(|(a, b)| a.parse::<u64>().is_ok() && b.parse::<u64>().is_ok())),
        "a partial line of ids"
    );
    v.write(rw, 0, b"x\n").unwrap();
    assert!(held(rw) < 64, "what was read is let go");
    v.release(wo);
    v.release(rw);
}

/// A reader of a read-write handle is owed every line of ids up to the
/// bound, whatever it read before: nothing is dropped early.
#[test]
fn a_reader_behind_by_less_than_the_bound_misses_no_ids() {
    use crate::mount::files::append::MAX_UNREAD_IDS;
    let t = tempfile::tempdir().unwrap();
    let mut o = crate::WalOptions::new(t.path());
    o.sync_mode = crate::SyncMode::Async;
    let v = View::new(Wal::new(o).unwrap(), "default", false).unwrap();
    let append = node(&v, Node::Root, b"append");
    let rw = v.open(append, true, true).unwrap().fh;
    let (mut want, mut i) = (String::new(), 0u64);
    let mut write_until = |len: usize, want: &mut String| {
        while want.len() < len {
            v.write(rw, 0, b"x\n").unwrap();
            want.push_str(&format!("{i}-{i}\n"));
            i += 1;
        }
    };
    write_until(70_000, &mut want);
    // Read some (less than what makes the handle let read ids go).
    let mut got = v.read(append, rw, 0, 60_000).unwrap();
    // Unread: under the bound; read and unread together: over it.
    write_until(MAX_UNREAD_IDS + 10_000, &mut want);
    got.extend(v.read(append, rw, 0, (2 * MAX_UNREAD_IDS) as u32).unwrap());
    assert!(String::from_utf8(got).unwrap() == want, "ids were dropped");
    v.release(rw);
}

/// Ids a reader has read are let go at the next write, however few.
#[test]
fn ids_once_read_are_let_go() {
    let t = tempfile::tempdir().unwrap();
    let v = view(t.path(), 64 << 20);
    let append = node(&v, Node::Root, b"append");
    let held = |fh: u64| match &*v.handle(fh).unwrap().lock() {
        Handle::Append(s) => s.ids_held(),
        _ => unreachable!(),
    };
    let rw = v.open(append, true, true).unwrap().fh;
    for _ in 0..10 {
        v.write(rw, 0, b"y\n").unwrap();
    }
    assert_eq!(
        v.read(append, rw, 0, 1 << 20).unwrap(),
        b"0-0\n1-1\n2-2\n3-3\n4-4\n5-5\n6-6\n7-7\n8-8\n9-9\n"
    );
    v.write(rw, 0, b"y\n").unwrap();
    assert_eq!(held(rw), "10-10\n".len());
    v.release(rw);
}

/// `record` is write-only: opened for reading (alone or with writing)
/// it is refused, so its read is never reached.
#[test]
fn record_opens_for_writing_only() {
    let t = tempfile::tempdir().unwrap();
    let v = view(t.path(), 64 << 20);
    let record = node(&v, Node::Root, b"record");
    for (read, write) in [(true, true), (true, false), (false, false)] {
        assert_eq!(
            v.open(record, read, write).err(),
            Some(libc::EACCES),
            "read {read}, write {write}"
        );
    }
    let h = v.open(record, false, true).unwrap();
    v.release(h.fh);
}

/// The bound on a line (MAX_RECORD) is exact wherever the line sits: a
/// held partial line, a trailing one, or many lines in one write.
#[test]
fn the_line_bound_is_exact() {
    let t = tempfile::tempdir().unwrap();
    let mut o = crate::WalOptions::new(t.path());
    o.sync_mode = crate::SyncMode::Async;
    let v = View::new(Wal::new(o).unwrap(), "default", false).unwrap();
    let append = node(&v, Node::Root, b"append");
    // Held, no newline: exactly the bound, then one byte more.
    let h = v.open(append, false, true).unwrap();
    v.write(h.fh, 0, &vec![b'a'; MAX_RECORD]).unwrap();
    assert_eq!(v.write(h.fh, 0, b"a"), Err(libc::EFBIG));
    v.release(h.fh);
    // A trailing partial line of exactly the bound after a line.
    let h = v.open(append, false, true).unwrap();
    let mut w = b"x\n".to_vec();
    w.extend(std::iter::repeat_n(b'r', MAX_RECORD));
    v.write(h.fh, 0, &w).unwrap();
    v.flush(h.fh).unwrap();
    v.release(h.fh);
    assert_eq!(v.source().next_id("default"), 2);
    // One write of short lines, far more than the bound in all.
    let h = v.open(append, false, true).unwrap();
    let lines = b"0123456789abcdef\n".repeat(MAX_RECORD / 16);
    v.write(h.fh, 0, &lines).unwrap();
    v.release(h.fh);
    assert_eq!(v.source().next_id("default"), 2 + (MAX_RECORD / 16) as u64);
}

/// Once stopping, every change is refused with ESHUTDOWN and counted;
/// an open file's held bytes are never committed after a refused write.
#[test]
fn stopping_refuses_every_change() {
    let t = tempfile::tempdir().unwrap();
    let v = view(t.path(), 64 << 20);
    let append = node(&v, Node::Root, b"append");
    let h = v.open(append, false, true).unwrap();
    v.write(h.fh, 0, b"held, no newline").unwrap();
    assert_eq!(v.open_writers(), 1);
    v.begin_stop();
    assert_eq!(v.write(h.fh, 0, b" and more\n"), Err(libc::ESHUTDOWN));
    assert_eq!(v.flush(h.fh), Err(libc::ESHUTDOWN));
    v.release(h.fh);
    assert_eq!(v.open_writers(), 0);
    assert_eq!(
        v.open(append, false, true).map(|_| ()),
        Err(libc::ESHUTDOWN)
    );
    assert_eq!(
        v.mkdir(Node::Streams, b"new").map(|_| ()),
        Err(libc::ESHUTDOWN)
    );
    assert_eq!(v.refused_changes(), 3);
    // Readers go on.
    assert!(v.open(node(&v, Node::Root, b"log"), true, false).is_ok());
    assert_eq!(v.source().next_id("default"), 0);
}

fn append_ok(v: &View, data: &[u8]) {
    assert_eq!(append(v, data), Ok(data.len() as u32));
}

#[test]
fn readdir_of_entries_resumes_from_any_offset() {
    let t = tempfile::tempdir().unwrap();
    let v = view(t.path(), 64 << 20);
    append(&v, b"a\nb\nc\nd\n").unwrap();
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let mut got = 0;
        v.readdir(entries_node(), offset, |name, _, _, next| {
            if got == 2 {
                return false; // a small reply buffer
            }
            got += 1;
            all.push(String::from_utf8(name.to_vec()).unwrap());
            offset = next;
            true
        })
        .unwrap();
        if got == 0 {
            break;
        }
    }
    assert_eq!(all, [".", "..", "0", "1", "2", "3"]);
}

#[test]
fn log_offsets_survive_truncation() {
    let t = tempfile::tempdir().unwrap();
    let v = view(t.path(), 100);
    for i in 0..20 {
        append(&v, format!("line {i:02}\n").as_bytes()).unwrap();
    }
    let log = Node::In {
        sno: 0,
        root_view: true,
        kind: Kind::Log,
        value: 0,
    };
    let size = v.getattr(log).unwrap().size;
    assert_eq!(size, 20 * 8);
    let all = v.read(log, 0, 0, 4096).unwrap();
    assert_eq!(
        all,
        (0..20)
            .map(|i| format!("line {i:02}\n"))
            .collect::<String>()
            .as_bytes()
    );
    // A read from the middle.
    assert_eq!(v.read(log, 0, 8 * 13 + 5, 3).unwrap(), b"13\n");
    let first = v.source().segments("default")[0].clone();
    let segments = Node::In {
        sno: 0,
        root_view: true,
        kind: Kind::Segments,
        value: 0,
    };
    v.unlink(
        segments,
        crate::format::segment_name(first.start_id).as_bytes(),
    )
    .unwrap();
    // Same size, same offsets; the freed prefix reads as zeros.
    assert_eq!(v.getattr(log).unwrap().size, size);
    let after = v.read(log, 0, 0, 4096).unwrap();
    let cut = (first.end_id * 8) as usize;
    assert!(after[..cut].iter().all(|&b| b == 0));
    assert_eq!(after[cut..], all[cut..]);
    append(&v, b"new\n").unwrap();
    assert_eq!(v.read(log, 0, size, 100).unwrap(), b"new\n");
}

#[test]
fn names_the_kernel_sends_are_parsed_strictly() {
    let t = tempfile::tempdir().unwrap();
    let v = view(t.path(), 64 << 20);
    append(&v, b"x\n").unwrap();
    assert!(v.lookup(entries_node(), b"0").is_ok());
    for bad in [&b"00"[..], b"+0", b"-0", b"1", b"", b"0\0", &[b'a'; 300]] {
        assert_eq!(
            v.lookup(entries_node(), bad).err(),
            Some(libc::ENOENT),
            "{bad:?}"
        );
    }
    assert_eq!(v.lookup(Node::Root, b"nope").err(), Some(libc::ENOENT));
    assert_eq!(v.lookup(Node::Streams, b"..").err(), Some(libc::ENOENT));
    // Writes where writing is not allowed.
    let log = v.lookup(Node::Root, b"log").unwrap();
    assert_eq!(
        v.open(Node::from_ino(log.ino).unwrap(), false, true).err(),
        Some(libc::EACCES)
    );
    assert_eq!(v.mkdir(Node::Root, b"x").err(), Some(libc::EACCES));
    assert_eq!(v.unlink(Node::Root, b"log").err(), Some(libc::EACCES));
}

#[test]
fn the_end_of_a_large_log_reads_only_its_end() {
    let disk = crate::SimDisk::with_root(std::path::Path::new("/v"));
    let mut o = crate::WalOptions::new("/v/data");
    o.max_segment_size = 64 << 10;
    o.sync_mode = SyncMode::Async;
    {
        let wal = Wal::with_storage(o.clone(), Arc::new(disk.clone())).unwrap();
        let line = vec![b'x'; 99];
        for _ in 0..20_000 {
            wal.append("default", &[line.as_slice(), b"\n"].concat())
                .unwrap();
        }
    }
    let wal = Wal::with_storage(o, Arc::new(disk.clone())).unwrap();
    assert!(wal.segments("default").len() > 20);
    let v = View::new(wal, "default", true).unwrap();
    let log = Node::In {
        sno: 0,
        root_view: true,
        kind: Kind::Log,
        value: 0,
    };
    let before = disk.bytes_read();
    let size = v.getattr(log).unwrap().size;
    assert_eq!(size, 20_000 * 100);
    let tail = v.read(log, 0, size - 4096, 4096).unwrap();
    assert_eq!(tail.len(), 4096);
    assert!(tail.ends_with(b"x\n"));
    let read = disk.bytes_read() - before;
    // The log is 2 MB in 30+ segments; stat plus the read touch only the
    // last segment (at most 64 KiB and a window).
    assert!(
        read < 256 << 10,
        "read {read} bytes for the last 4 KiB of a {size}-byte log"
    );
}
