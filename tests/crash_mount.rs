//! Process crashes through the mount: writer processes append lines and
//! binary records in strict mode, the daemon is killed with SIGKILL at a
//! random moment, the log is remounted, and every entry whose write(2) (or,
//! for records, close(2)) returned success must be there: intact, once, in
//! each writer's order, with ids dense.
//!
//! What it proves is the process crash: SIGKILL leaves the kernel's page
//! cache alone, so it cannot see a missing fdatasync (strict mode's power
//! loss guarantee rests on tests/crash_concurrent.rs, whose mount writers
//! run on the simulated disk, and tests/crash.rs).
//!
//! WALFS_CRASH_ITERS=N runs N iterations (default 4); the seed of a failing
//! iteration is in the failure message.

mod common;

use common::mount::Mounted;
use common::Rng;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Starts a writer process; it prints each line once the write returned.
fn writer(script: String) -> std::process::Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn iteration(m: &mut Mounted, seed: u64) -> usize {
    let mut rng = Rng(seed);
    let stop = m.dir.path().join(format!("run-{seed}"));
    std::fs::write(&stop, b"").unwrap();
    let append = m.path("append");
    let record = m.path("record");
    let mut children = Vec::new();
    for w in 0..4 {
        children.push(writer(format!(
            "i=0; while [ -e {stop} ]; do echo \"s{seed} w{w} i$i\" >> {append} && echo \"s{seed} w{w} i$i\"; i=$((i+1)); done",
            stop = stop.display(),
            append = append.display()
        )));
    }
    // Binary records: a newline and a NUL inside, committed at close. cp
    // checks close(2); a shell redirection does not (dup2 drops the error
    // of the close it implies), so it could not tell a failed commit.
    let tmp = m.dir.path().join(format!("rec-{seed}"));
    children.push(writer(format!(
        "i=0; while [ -e {stop} ]; do printf 's{seed} r i%d\\nsecond line\\0end' $i > {tmp} && cp {tmp} {record} && echo \"s{seed} r i$i\"; i=$((i+1)); done",
        stop = stop.display(),
        tmp = tmp.display(),
        record = record.display()
    )));
    let readers: Vec<_> = children
        .iter_mut()
        .map(|c| {
            let out = c.stdout.take().unwrap();
            std::thread::spawn(move || {
                BufReader::new(out)
                    .lines()
                    .map_while(Result::ok)
                    .collect::<Vec<String>>()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(150 + rng.below(600)));
    m.signal(libc::SIGKILL);
    std::fs::remove_file(&stop).unwrap();
    for mut c in children {
        let _ = c.wait();
    }
    let acked: Vec<String> = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    m.spawn();

    // Read back every entry of this iteration, with its id.
    let stat = std::fs::read_to_string(m.path("stat")).unwrap();
    let field = |k: &str| -> u64 {
        stat.lines()
            .find_map(|l| l.strip_prefix(k))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let (first, next) = (field("first_id:"), field("next_id:"));
    let mut by_content: HashMap<Vec<u8>, u64> = HashMap::new();
    for id in first..next {
        let e = std::fs::read(m.path(&format!("entries/{id}")))
            .unwrap_or_else(|e| panic!("seed {seed}: entry {id} unreadable: {e}"));
        assert!(
            by_content.insert(e.clone(), id).is_none(),
            "seed {seed}: duplicate entry {:?}",
            String::from_utf8_lossy(&e)
        );
    }
    let mut last_id: HashMap<String, u64> = HashMap::new();
    for ack in &acked {
        let want: Vec<u8> = if ack.contains(" r ") {
            let i = ack.rsplit(" i").next().unwrap();
            format!("s{seed} r i{i}\nsecond line\0end").into_bytes()
        } else {
            format!("{ack}\n").into_bytes()
        };
        let id = *by_content.get(&want).unwrap_or_else(|| {
            let tag = ack.as_bytes();
            let near: Vec<(u64, String)> = by_content
                .iter()
                .filter(|(c, _)| c.windows(tag.len()).any(|w| w == tag))
                .map(|(c, id)| (*id, String::from_utf8_lossy(c).into_owned()))
                .collect();
            panic!(
                "seed {seed}: acknowledged {ack:?} lost; entries holding it: {near:?}; acked {}",
                acked.len()
            )
        });
        let who = ack.rsplit_once(' ').unwrap().0.to_string();
        if let Some(prev) = last_id.insert(who, id) {
            assert!(prev < id, "seed {seed}: {ack:?} out of order");
        }
    }
    acked.len()
}

#[test]
fn a_process_crash_of_the_daemon_loses_nothing_acknowledged() {
    let iters: u64 = std::env::var("WALFS_CRASH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let base: u64 = std::env::var("WALFS_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed);
    let mut m = Mounted::start(&["--segment-size", "65536"]);
    let mut total = 0;
    for k in 0..iters {
        total += iteration(&mut m, base + k);
    }
    println!("{iters} SIGKILLs, {total} acknowledged entries, 0 lost");
    assert!(total > 0);
}
