//! `cat segments/<sealed>.wal` through the mount, with FUSE passthrough
//! (the kernel reads the segment file itself) and without it (the daemon
//! serves every READ), against `cat` of the same file on disk and the null
//! FUSE filesystem's pread-and-reply of it, all in one run.

use super::{dir, null_row, nullfs, sh_time, BenchMount, Row};
use std::path::{Path, PathBuf};

/// The first sealed segment's name under `mnt/segments` and its file in
/// `data`.
fn first_sealed(mnt: &Path, data: &Path) -> (String, PathBuf) {
    let mut names: Vec<String> = std::fs::read_dir(mnt.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert!(names.len() >= 2, "no sealed segment: {names:?}");
    let name = names.swap_remove(0);
    // The bench mounts the stream `default`.
    let path = data.join("default").join(&name);
    (name, path)
}

/// Drops the page cache (root only); false when it could not.
fn drop_caches() -> bool {
    sh_time("sync");
    std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

pub fn rows(rows: &mut Vec<Row>) {
    eprintln!("sealed segments through the mount...");
    let root = dir("mount-segments");
    // 128 MiB of 100-byte lines: two 64 MiB segments and an active one.
    let lines = root.join("lines");
    {
        let chunk = format!("{}\n", "s".repeat(99)).repeat(10_000);
        let mut f = std::fs::File::create(&lines).unwrap();
        for _ in 0..(128 << 20) / chunk.len() {
            std::io::Write::write_all(&mut f, chunk.as_bytes()).unwrap();
        }
    }
    let cat = |p: &Path| sh_time(&format!("cat {} > /dev/null", p.display()));
    let mut first = Vec::new();
    let mut size = 0.0;
    let mut cold = None;
    for passthrough in [true, false] {
        let at = root.join(if passthrough { "pt" } else { "daemon" });
        let m = BenchMount::start_with(&at, walfs::SyncMode::Async, passthrough);
        sh_time(&format!(
            "cat {} >> {}",
            lines.display(),
            m.mnt.join("append").display()
        ));
        sh_time("sync");
        let (name, disk) = first_sealed(&m.mnt, &at.join("data"));
        size = std::fs::metadata(&disk).unwrap().len() as f64 / 1e6;
        let seg = m.mnt.join("segments").join(&name);
        // Warm on disk's side in both; the mount's first read of it
        // (with passthrough every read is one: the mount caches nothing,
        // so it is the median of 3 alternating runs).
        cat(&disk);
        let (plain, t) = if passthrough {
            super::medians_of_3(|_| cat(&disk), |_| cat(&seg))
        } else {
            (cat(&disk), cat(&seg))
        };
        first.push((passthrough, t, plain));
        if passthrough {
            let null = nullfs::NullMount::start(&root.join("null"), &disk);
            let tn = cat(&null.mnt.join("file"));
            null_row(
                rows,
                "mount: cat segments/<sealed>.wal (64 MiB), first read, passthrough",
                "MB/s",
                size / t,
                size / tn,
                false,
            );
            // From the disk: both after dropping the page cache, median
            // of 3 alternating runs.
            if drop_caches() {
                let (plain, t) = super::medians_of_3(
                    |_| {
                        drop_caches();
                        cat(&disk)
                    },
                    |_| {
                        drop_caches();
                        cat(&seg)
                    },
                );
                cold = Some((t, plain));
            }
        }
    }
    for (passthrough, t, plain) in first {
        let how = if passthrough {
            "passthrough (median of 3)"
        } else {
            "--no-passthrough"
        };
        rows.push(Row {
            name: format!("mount: cat segments/<sealed>.wal (64 MiB), first read, {how}"),
            unit: "MB/s",
            walfs: size / t,
            baseline_name: "cat of the segment file",
            baseline: size / plain,
            target: if passthrough { 0.8 } else { 0.0 },
            lower_is_better: false,
        });
    }
    match cold {
        Some((t, plain)) => rows.push(Row {
            name: "mount: cat segments/<sealed>.wal (64 MiB), cold from disk, passthrough (median of 3)".into(),
            unit: "MB/s",
            walfs: size / t,
            baseline_name: "cat of the segment file, cold",
            baseline: size / plain,
            target: 0.8,
            lower_is_better: false,
        }),
        None => eprintln!("not root: skipping the cold-from-disk segment row"),
    }
    let _ = std::fs::remove_dir_all(root);
}
