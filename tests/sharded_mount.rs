//! A sharded log through the mount (`checkpoints/`, shards under
//! `streams/`) and the CLI (`walfs checkpoint`, `walfs prune`), for real.

mod common;

use common::mount::{sh, Mounted};
use common::walfs_cli;
use std::io::Write;
use walfs::sharded::{self, ShardedWal};
use walfs::WalOptions;

fn read(p: &std::path::Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_sharded_log_mounts_with_its_checkpoints() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    // ironwal writes the directory; walfs mounts it without being told the
    // count (its checkpoint says it).
    {
        let mut o = ironwal::WalOptions::new(&data);
        o.sync_mode = ironwal::SyncMode::Strict;
        let iw = ironwal::sharded::ShardedWal::new(o, 4).unwrap();
        for i in 0..40 {
            iw.append(
                format!("user_{i}").as_bytes(),
                format!("event {i}\n").as_bytes(),
            )
            .unwrap();
        }
        iw.create_checkpoint(b"raft-40").unwrap();
    }
    let mut m = Mounted::start_on(&data, &[]);
    let cp = m.path("checkpoints");
    let mut names: Vec<String> = std::fs::read_dir(&cp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["HEAD", "new", "raft-40"]);
    assert_eq!(read(&cp.join("HEAD")), "raft-40\n");
    let text = read(&cp.join("raft-40"));
    let offsets: Vec<u64> = text
        .lines()
        .enumerate()
        .map(|(s, l)| {
            let (name, o) = l.split_once(": ").unwrap();
            assert_eq!(name, sharded::shard_name(s as u16));
            o.parse().unwrap()
        })
        .collect();
    assert_eq!(offsets.len(), 4);
    assert_eq!(offsets.iter().sum::<u64>(), 40);
    // The shards are streams; their entries line up with the offsets.
    for (s, &o) in offsets.iter().enumerate() {
        let log = read(&m.path(&format!("streams/{}/log", sharded::shard_name(s as u16))));
        assert_eq!(log.lines().count() as u64, o, "shard {s}");
    }
    // No `default` stream is made in a sharded log.
    assert!(!m.path("streams/default").exists());

    // A checkpoint from the shell, after more appends through the mount.
    let (code, _, err) = sh(&format!(
        "echo more >> {0}/streams/shard_01/append && echo snap-2 > {0}/checkpoints/new",
        m.mnt.display()
    ));
    assert_eq!(code, 0, "{err}");
    assert_eq!(read(&cp.join("HEAD")), "snap-2\n");
    let snap2 = read(&cp.join("snap-2"));
    assert!(
        snap2.contains(&format!("shard_01: {}\n", offsets[1] + 1)),
        "{snap2}"
    );
    // Several in one write, and a last line without its newline at close.
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(cp.join("new"))
            .unwrap();
        f.write_all(b"a\nb\nc").unwrap();
        assert!(cp.join("b").exists(), "made when the write returned");
    }
    assert_eq!(read(&cp.join("HEAD")), "c\n");
    // Ids that are not file names show in hex.
    std::fs::write(cp.join("new"), b"HEAD\n").unwrap();
    assert_eq!(read(&cp.join("HEAD")), "%48454144\n");
    assert!(cp.join("%48454144").exists());
    // What cannot be done says so.
    let e = std::fs::write(cp.join("new"), b"\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "an empty id");
    assert_eq!(
        std::fs::write(cp.join("snap-2"), b"x")
            .unwrap_err()
            .raw_os_error(),
        Some(libc::EACCES)
    );
    assert!(std::fs::read(cp.join("nope")).is_err());
    assert!(std::fs::read(cp.join("new")).is_err(), "new is write-only");
    // The CLI reads checkpoints beside the mount, and says how to make one.
    let d = data.to_str().unwrap();
    let (code, out, err) = walfs_cli(&["checkpoint", "list", d], &[]);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<&str> = out.lines().map(|l| l.split('\t').next().unwrap()).collect();
    assert_eq!(ids, vec!["raft-40", "snap-2", "a", "b", "c", "HEAD"]);
    let (code, _, err) = walfs_cli(&["checkpoint", "create", d, "x"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("checkpoints/new"), "{err}");
    m.stop();

    // After a restart everything is there; ironwal agrees on the latest.
    let m = Mounted::start_on(&data, &[]);
    assert_eq!(read(&m.path("checkpoints/HEAD")), "%48454144\n");
    assert_eq!(read(&m.path("checkpoints/snap-2")), snap2);
    drop(m);
    let iw = ironwal::sharded::ShardedWal::new(ironwal::WalOptions::new(&data), 4).unwrap();
    assert_eq!(iw.load_latest_checkpoint().unwrap().0, b"HEAD");
    assert_eq!(iw.checkpoint_count(), 6);
}

#[test]
fn mounting_makes_or_refuses_by_the_shard_count() {
    // --shards makes a new sharded log; its shards appear as they are written.
    let mut m = Mounted::start(&["--shards", "3"]);
    assert_eq!(read(&m.path("checkpoints/HEAD")), "");
    let data = m.data.clone();
    assert_eq!(read(&data.join("SHARDS")), "3\n");
    std::fs::write(m.path("checkpoints/new"), "empty\n").unwrap();
    assert_eq!(
        read(&m.path("checkpoints/empty")),
        "shard_00: 0\nshard_01: 0\nshard_02: 0\n"
    );
    m.stop();
    // In async mode a checkpoint through the mount still names every entry
    // acknowledged before it (the shards are synced first).
    let mut m = Mounted::start_on(&data, &["--sync", "async"]);
    let (code, _, err) = sh(&format!(
        "for i in 1 2 3; do echo e$i >> {0}/streams/shard_02/append; done && echo after-async > {0}/checkpoints/new",
        m.mnt.display()
    ));
    assert_eq!(code, 0, "{err}");
    assert!(read(&m.path("checkpoints/after-async")).contains("shard_02: 3\n"));
    m.stop();
    // Another count is refused, naming the right one.
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("mnt")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_walfs"))
        .args(["mount", data.to_str().unwrap()])
        .arg(t.path().join("mnt"))
        .args(["--shards", "5"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--shards 3"), "{err}");
    // A read-only mount shows checkpoints and makes none.
    let m = Mounted::start_on(&data, &["--read-only"]);
    assert!(m.path("checkpoints/empty").exists());
    let e = std::fs::write(m.path("checkpoints/new"), "x\n").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS));
    drop(m);
    // An ironwal directory without a checkpoint (no recorded count) mounts
    // too: its shards as streams; --shards adds checkpoints/.
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("iron");
    {
        let iw = ironwal::sharded::ShardedWal::new(ironwal::WalOptions::new(&data), 8).unwrap();
        for i in 0..100 {
            iw.append(format!("k{i}").as_bytes(), b"v\n").unwrap();
        }
    }
    let m = Mounted::start_on(&data, &[]);
    assert!(m.path("streams/shard_07/log").exists());
    assert!(!m.path("checkpoints").exists());
    drop(m);
    let m = Mounted::start_on(&data, &["--shards", "8"]);
    std::fs::write(m.path("checkpoints/new"), "first\n").unwrap();
    let total: u64 = read(&m.path("checkpoints/first"))
        .lines()
        .map(|l| l.split_once(": ").unwrap().1.parse::<u64>().unwrap())
        .sum();
    assert_eq!(total, 100);
}

#[test]
fn the_cli_makes_shows_compacts_and_prunes() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let d = data.to_str().unwrap();
    let cli = |args: &[&str]| {
        let (code, out, err) = walfs_cli(args, &[]);
        assert_eq!(code, 0, "{args:?}: {err}");
        out
    };
    // Not a sharded log yet: say how to make one.
    let (code, _, err) = walfs_cli(&["checkpoint", "create", d, "x"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("--shards"), "{err}");
    cli(&["checkpoint", "create", d, "--shards", "2", "start"]);
    {
        let mut o = WalOptions::new(&data);
        o.max_segment_size = 1024;
        let w = ShardedWal::new(o, 2).unwrap();
        for i in 0..200 {
            w.append(format!("k{i}").as_bytes(), &[b'x'; 100]).unwrap();
        }
    }
    let out = cli(&["checkpoint", "create", d, "mid"]);
    let mid: Vec<u64> = out
        .lines()
        .map(|l| l.split_once(": ").unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(mid.iter().sum::<u64>(), 200);
    assert_eq!(cli(&["checkpoint", "show", d]), out, "the latest");
    assert_eq!(cli(&["checkpoint", "show", d, "mid"]), out);
    let (code, _, err) = walfs_cli(&["checkpoint", "show", d, "nope"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("no checkpoint named \"nope\""), "{err}");
    // "start" holds everything back until compacted away.
    let out = cli(&["prune", d, "--before", "mid"]);
    assert!(
        out.contains("freed 0 segment(s)") && out.contains("\"start\""),
        "{out}"
    );
    assert!(cli(&["checkpoint", "compact", d, "--keep", "1"]).contains("kept 1 of 2"));
    let out = cli(&["prune", d, "--before", "mid"]);
    assert!(!out.contains("freed 0 "), "{out}");
    let list = cli(&["checkpoint", "list", d]);
    assert_eq!(list.lines().count(), 1);
    assert!(list.starts_with("mid\t"));
    // Every entry from mid on is still there.
    let w = ShardedWal::new(WalOptions::new(&data), 2).unwrap();
    for (s, &o) in mid.iter().enumerate() {
        let name = sharded::shard_name(s as u16);
        assert!(w.inner().first_id(&name) > 0 && w.inner().first_id(&name) <= o);
        assert_eq!(w.iter_shard(s as u16, o).unwrap().count(), 0);
    }
    drop(w);
    let (code, _, err) = walfs_cli(&["checkpoint", "list", d, "--shards", "3"], &[]);
    assert_eq!(code, 1);
    assert!(err.contains("holds 2 shards"), "{err}");
    // verify checks the checkpoint log too, and names the damaged byte.
    let (code, _, err) = walfs_cli(&["verify", d], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("checkpoints.log: 1 checkpoint record(s), sound"),
        "{err}"
    );
    let log = data.join("checkpoints.log");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[20] ^= 1;
    std::fs::write(&log, &bytes).unwrap();
    let (code, out, _) = walfs_cli(&["verify", d], &[]);
    assert_eq!(code, 1);
    assert!(
        out.contains("checkpoints.log at byte 0: crc mismatch"),
        "{out}"
    );
    let (code, out, _) = walfs_cli(&["checkpoint", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(out.contains("create") && out.contains("compact"));
}

/// Removing a shard's oldest segment (through the mount) or truncating a
/// shard (`walfs truncate`) never frees ids a listed checkpoint names, as
/// `prune` never does: the mount refuses with EBUSY, the CLI stops at the
/// checkpoint and names it. A shard whose checkpoints all point past the
/// segment is truncated as before.
#[test]
fn truncation_keeps_what_checkpoints_name() {
    let t = tempfile::tempdir().unwrap();
    let data = t.path().join("data");
    let d = data.to_str().unwrap();
    {
        let mut o = WalOptions::new(&data);
        o.max_segment_size = 1024;
        let w = ShardedWal::new(o, 2).unwrap();
        for i in 0..3 {
            w.inner()
                .append("shard_00", format!("early {i}\n").as_bytes())
                .unwrap();
        }
        w.create_checkpoint(b"early").unwrap();
        for i in 0..60 {
            for s in ["shard_00", "shard_01"] {
                w.inner().append(s, &[b'x'; 100]).unwrap();
            }
            if i == 0 {
                // shard_01's offset in "early" is 0; this one names 1.
                w.create_checkpoint(b"one").unwrap();
            }
        }
    }
    let segs = |m: &Mounted, s: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(m.path(&format!("streams/{s}/segments")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    };
    {
        let m = Mounted::start_on(&data, &["--segment-size", "1024"]);
        for s in ["shard_00", "shard_01"] {
            let before = segs(&m, s);
            assert!(before.len() > 3, "{s}: {before:?}");
            let e = std::fs::remove_file(m.path(&format!("streams/{s}/segments/{}", before[0])))
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EBUSY), "{s}");
            assert_eq!(segs(&m, s), before, "{s}: nothing removed");
            assert!(m.path(&format!("streams/{s}/entries/0")).exists());
        }
    }
    // The CLI stops at the lowest offset named, and says which checkpoint.
    let (code, out, err) = walfs_cli(
        &["truncate", d, "--stream", "shard_00", "--before", "60"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("freed 0 segment(s)") && out.contains("\"early\""),
        "{out}"
    );
    // Without "early", shard_01 is bound by "one" (offset 1), inside its
    // oldest segment: still nothing.
    let (code, _, err) = walfs_cli(&["checkpoint", "compact", d, "--keep", "1"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, _) = walfs_cli(
        &["truncate", d, "--stream", "shard_01", "--before", "60"],
        &[],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("freed 0 segment(s)") && out.contains("\"one\""),
        "{out}"
    );
    // No checkpoint left: truncation goes as far as asked.
    let (code, _, err) = walfs_cli(&["checkpoint", "compact", d, "--keep", "0"], &[]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = walfs_cli(
        &["truncate", d, "--stream", "shard_01", "--before", "60"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains("freed 0 ") && !out.contains("held back"),
        "{out}"
    );
    let m = Mounted::start_on(&data, &["--segment-size", "1024"]);
    let before = segs(&m, "shard_00");
    std::fs::remove_file(m.path(&format!("streams/shard_00/segments/{}", before[0]))).unwrap();
    assert_eq!(segs(&m, "shard_00"), before[1..]);
}
