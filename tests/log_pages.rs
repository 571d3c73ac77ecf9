//! A growing `log` never shows a reader bytes that are not the log's:
//! readers that follow it with the file held open (where a page cached at
//! the old end would show zeros), readers that open it again and again,
//! and truncation while a reader holds the file. Every test is a real
//! mount.
//!
//! These are the tests any attempt to serve `log` through the kernel's
//! page cache must pass. Two such attempts failed them within seconds:
//! FOPEN_KEEP_CACHE with the kernel's own invalidation on size changes
//! (a page in use survives it), and FUSE_EXPLICIT_INVAL_DATA with the
//! daemon storing the old end's folio (FUSE_NOTIFY_STORE) before any
//! larger size was reported (the kernel raises the file's size before it
//! copies the stored bytes, and a reader in between copies the zeros).

mod common;

use common::mount::Mounted;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Lines of varied lengths, so that the log's end falls anywhere in a page.
fn line(n: u64) -> Vec<u8> {
    let len = (n * 7919 % 300) as usize;
    let mut l = format!("line {n} ").into_bytes();
    l.extend(std::iter::repeat_n(b'a' + (n % 26) as u8, len));
    l.push(b'\n');
    l
}

/// Reads what `f` holds past `*pos` into `seen`, returning how much.
fn follow(f: &mut std::fs::File, seen: &mut Vec<u8>) -> usize {
    let mut buf = vec![0u8; 64 << 10];
    let mut got = 0;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return got;
        }
        assert!(
            !buf[..n].contains(&0),
            "a follower read a zero byte at log offset {}",
            seen.len() + buf[..n].iter().position(|&b| b == 0).unwrap()
        );
        seen.extend_from_slice(&buf[..n]);
        got += n;
    }
}

/// A writer appends lines in small writes while followers hold `log` open
/// and read each new end (through the pages they cached at the old end),
/// and other readers open and read it whole again and again: nobody ever
/// sees a zero byte, and every follower ends with exactly what was
/// written.
fn followers_never_see_zeros(sync: &str) {
    let m = Mounted::start(&["--sync", sync]);
    let log = m.path("log");
    let done = Arc::new(AtomicBool::new(false));
    let followers: Vec<_> = (0..3)
        .map(|k| {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                let mut f = std::fs::File::open(&log).unwrap();
                let mut seen = Vec::new();
                let mut rounds = 0u64;
                while !done.load(Ordering::Acquire) {
                    follow(&mut f, &mut seen);
                    rounds += 1;
                    std::thread::sleep(Duration::from_micros(200 * (k + 1)));
                }
                follow(&mut f, &mut seen);
                (seen, rounds)
            })
        })
        .collect();
    let rereaders: Vec<_> = (0..2)
        .map(|_| {
            let (log, done) = (log.clone(), done.clone());
            std::thread::spawn(move || {
                let mut passes = 0u64;
                while !done.load(Ordering::Acquire) {
                    let all = std::fs::read(&log).unwrap();
                    assert!(!all.contains(&0), "a whole read held a zero byte");
                    passes += 1;
                }
                passes
            })
        })
        .collect();
    let mut want = Vec::new();
    let mut n = 0;
    let mut append = OpenOptions::new()
        .append(true)
        .open(m.path("append"))
        .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until || n < 500 {
        let mut w = Vec::new();
        for _ in 0..1 + n % 3 {
            w.extend(line(n));
            n += 1;
        }
        append.write_all(&w).unwrap();
        want.extend(w);
    }
    append.sync_all().unwrap();
    done.store(true, Ordering::Release);
    for f in followers {
        let (seen, rounds) = f.join().unwrap();
        assert!(rounds > 10, "followers kept reading ({rounds} rounds)");
        assert!(
            seen == want,
            "a follower ended with other bytes than written"
        );
    }
    for r in rereaders {
        assert!(r.join().unwrap() > 0);
    }
    assert_eq!(std::fs::read(&log).unwrap(), want);
    println!("{sync}: {n} lines, {} bytes", want.len());
}

#[test]
fn followers_of_a_growing_log_never_see_zeros_async() {
    followers_never_see_zeros("async");
}

#[test]
fn followers_of_a_growing_log_never_see_zeros_strict() {
    followers_never_see_zeros("strict");
}

/// A reader that read the whole log (through the page cache, its pages
/// would be cached), then the oldest
/// segment removed: reading the start again gives zeros, as the README
/// promises for entries truncated away while mounted, and the rest is
/// unchanged.
#[test]
fn truncated_entries_read_as_zeros_after_they_were_cached() {
    let m = Mounted::start(&["--segment-size", "4096"]);
    let mut want = Vec::new();
    {
        let mut a = OpenOptions::new()
            .append(true)
            .open(m.path("append"))
            .unwrap();
        for n in 0..200 {
            let l = line(n);
            a.write_all(&l).unwrap();
            want.extend(l);
        }
    }
    let mut f = std::fs::File::open(m.path("log")).unwrap();
    let mut all = Vec::new();
    f.read_to_end(&mut all).unwrap();
    assert_eq!(all, want);
    let mut segs: Vec<String> = std::fs::read_dir(m.path("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    segs.sort();
    assert!(segs.len() > 2);
    std::fs::remove_file(m.path(&format!("segments/{}", segs[0]))).unwrap();
    let first: u64 = segs[1].trim_end_matches(".wal").parse().unwrap();
    let hole: usize = (0..first).map(|n| line(n).len()).sum();
    common::eventually("the truncated start reads as zeros", 5, || {
        let mut again = Vec::new();
        f.seek(SeekFrom::Start(0)).unwrap();
        f.read_to_end(&mut again).unwrap();
        again.len() == want.len()
            && again[..hole].iter().all(|&b| b == 0)
            && again[hole..] == want[hole..]
    });
}
