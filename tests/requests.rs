//! What the kernel asks of the mount per `echo >> append`: one LOOKUP (the
//! name keeps its inode while no writer holds it, so the kernel's
//! revalidation succeeds), while writers that hold `append` open at once
//! still get an inode each (the kernel's O_APPEND lock is per inode: on one
//! inode they would take turns, and never share an fdatasync). Counted by
//! the daemon's own metrics.

mod common;

use common::mount::{sh, Mounted};
use std::io::Write;
use std::os::unix::fs::MetadataExt;

/// The tests here count what the kernel asks, and one drops the kernel's
/// dentry cache: they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Context switches of the daemon's invalidation thread so far.
fn invalidator_switches(pid: u32) -> u64 {
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        if comm.trim_end() == "walfs-invalidat" {
            let status = std::fs::read_to_string(t.join("status")).unwrap();
            return status
                .lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
                .sum();
        }
    }
    panic!("no invalidation thread in the daemon");
}

fn requests(port: u16, op: &str) -> u64 {
    common::metric(port, &format!("walfs_fuse_requests_total{{op=\"{op}\"}}"))
}

#[test]
fn a_lone_echo_costs_one_lookup_and_writers_open_at_once_get_an_inode_each() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let port = common::metrics_port();
    let mut m = Mounted::start(&["--sync", "async", "--metrics", &port.to_string()]);
    let append = m.path("append");
    // Warm: the name is in the kernel's cache.
    sh(&format!("echo first >> {}", append.display()));
    let (l0, o0, w0) = (
        requests(port, "lookup"),
        requests(port, "open"),
        requests(port, "write"),
    );
    let (code, _, e) = sh(&format!(
        "i=0; while [ $i -lt 100 ]; do echo \"line $i\" >> {}; i=$((i+1)); done",
        append.display()
    ));
    assert_eq!(code, 0, "{e}");
    let (lookups, opens, writes) = (
        requests(port, "lookup") - l0,
        requests(port, "open") - o0,
        requests(port, "write") - w0,
    );
    println!("100 echos: {lookups} LOOKUPs, {opens} OPENs, {writes} WRITEs");
    assert_eq!((opens, writes), (100, 100));
    // One per echo; a few more when an echo's LOOKUP overtakes the last
    // one's RELEASE (the kernel sends it after close(2) has returned), so
    // that inode is still held. A new inode at every lookup costs 200.
    assert!(
        (100..=110).contains(&lookups),
        "{lookups} LOOKUPs for 100 echos"
    );

    // Held open at once: distinct inodes. Released: the first one again.
    let open = || {
        std::fs::OpenOptions::new()
            .append(true)
            .open(&append)
            .unwrap()
    };
    let (mut a, mut b) = (open(), open());
    let (ia, ib) = (a.metadata().unwrap().ino(), b.metadata().unwrap().ino());
    assert_ne!(ia, ib, "two writers on one inode");
    a.write_all(b"from a\n").unwrap();
    b.write_all(b"from b\n").unwrap();
    drop((a, b));
    // Once their RELEASEs arrive (after close has returned), the first
    // inode is free and named again.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let c = open();
        if c.metadata().unwrap().ino() == ia {
            break;
        }
        drop(c);
        assert!(
            std::time::Instant::now() < deadline,
            "a free inode is never named again"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let log = std::fs::read_to_string(m.path("log")).unwrap();
    assert!(log.ends_with("line 99\nfrom a\nfrom b\n"), "{log}");
    m.stop();
}

/// A commit notifies the kernel of the growing files it holds and of no
/// others: with nothing looked up but `append`, 300 echos send no
/// invalidation (each would fail with ENOENT, a system call per file per
/// commit: 8 per echo before), and do not wake the thread that sends them. Once a reader has looked up `stat`, commits
/// invalidate it, and `stat` read again shows the new entry.
#[test]
fn commits_invalidate_only_the_growing_files_the_kernel_holds() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let port = common::metrics_port();
    let mut m = Mounted::start(&["--metrics", &port.to_string()]);
    let append = m.path("append");
    let sent = || common::metric(port, "walfs_invalidations_total");
    // The invalidation thread looks at least every 250 ms.
    let settle = || std::thread::sleep(std::time::Duration::from_millis(600));
    sh(&format!("echo first >> {}", append.display()));
    settle();
    let i0 = sent();
    // Nor is the invalidation thread woken by each commit: only every
    // 250 ms for the directories (its context switches, from /proc).
    let wakes = || invalidator_switches(m.pid());
    let (w0, t0) = (wakes(), std::time::Instant::now());
    let (code, _, e) = sh(&format!(
        "i=0; while [ $i -lt 300 ]; do echo \"line $i\" >> {}; i=$((i+1)); done",
        append.display()
    ));
    assert_eq!(code, 0, "{e}");
    let (woken, secs) = (wakes() - w0, t0.elapsed().as_secs_f64());
    println!("300 commits in {secs:.2} s woke the invalidation thread {woken} times");
    assert!(
        (woken as f64) < 8.0 * secs + 10.0 && woken < 150,
        "300 commits woke the invalidation thread {woken} times in {secs:.2} s"
    );
    settle();
    assert_eq!(sent() - i0, 0, "invalidations of files no one looked up");

    let stat = m.path("stat");
    let before = std::fs::read_to_string(&stat).unwrap();
    assert!(before.contains("next_id: 301\n"), "{before}");
    let i1 = sent();
    sh(&format!("echo last >> {}", append.display()));
    settle();
    assert!(
        sent() > i1,
        "no invalidation of the `stat` the kernel holds"
    );
    let after = std::fs::read_to_string(&stat).unwrap();
    assert!(after.contains("next_id: 302\n"), "{after}");

    // Once the kernel forgets its inodes (dentries and inodes dropped, as
    // under memory pressure), commits notify nothing again.
    std::fs::write("/proc/sys/vm/drop_caches", "2")
        .expect("dropping the kernel's dentry cache needs root: run the tests as root");
    settle();
    let i2 = sent();
    sh(&format!("echo again >> {}", append.display()));
    settle();
    assert_eq!(sent() - i2, 0, "invalidations of forgotten inodes");
    m.stop();
}
