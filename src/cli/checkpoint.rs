//! `walfs checkpoint` and `walfs prune`: the checkpoints of a sharded log
//! (ironwal's ShardedWal layout).

use super::{fail, Failure};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use walfs::sharded::{detect, shard_name, show_id, ShardCount, ShardedWal};
use walfs::{Error, WalOptions};

#[derive(Args)]
pub struct CheckpointArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Args)]
struct Place {
    /// The sharded log's data directory.
    data: PathBuf,
    /// Its shard count, where DATA does not record it (a directory ironwal
    /// made without checkpoints); `create` on a new DATA makes a sharded
    /// log of N shards.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    shards: Option<u16>,
}

#[derive(Subcommand)]
enum Action {
    /// Record each shard's durable position as checkpoint ID (durable on
    /// return; an ID made again replaces the earlier one). Prints it.
    Create {
        #[command(flatten)]
        place: Place,
        /// The checkpoint's id (1-65535 bytes).
        id: String,
    },
    /// List the checkpoints, oldest first: id, time made, offsets.
    List {
        #[command(flatten)]
        place: Place,
    },
    /// Print a checkpoint's offsets as `shard_NN: offset` lines (the latest
    /// without ID).
    Show {
        #[command(flatten)]
        place: Place,
        /// The checkpoint's id.
        id: Option<String>,
    },
    /// Rewrite the checkpoint log with only its newest KEEP checkpoints.
    Compact {
        #[command(flatten)]
        place: Place,
        /// How many of the newest checkpoints to keep.
        #[arg(long)]
        keep: usize,
    },
}

#[derive(Args)]
pub struct PruneArgs {
    #[command(flatten)]
    place: Place,
    /// Free, in every shard, the sealed segments that hold only entries
    /// below this checkpoint (never below an older listed checkpoint:
    /// `walfs checkpoint compact` releases those).
    #[arg(long, value_name = "ID")]
    before: String,
}

fn open(place: &Place, write: bool) -> Result<ShardedWal, Failure> {
    let data = &place.data;
    if !write && !data.is_dir() {
        return Err(fail(format!("{}: no such data directory", data.display())));
    }
    let count = match (detect(data)?, place.shards) {
        (_, Some(n)) => n,
        (Some(ShardCount::Exact(n)), None) => n,
        (Some(ShardCount::AtLeast(n)), None) => {
            return Err(fail(format!(
                "the shard count of {} is not recorded (its highest shard is {}): give it with --shards N (at least {n})",
                data.display(),
                shard_name(n - 1)
            )))
        }
        (None, None) if data.is_dir() => {
            return Err(fail(format!(
                "{} is not a sharded log (no SHARDS, checkpoints.log or HEAD); give --shards N to make it one",
                data.display()
            )))
        }
        (None, None) => {
            return Err(fail(format!(
                "{}: no such data directory; give --shards N to make a sharded log there",
                data.display()
            )))
        }
    };
    let mut o = WalOptions::new(data);
    // Reading checkpoints takes no lock: it works beside a running mount.
    o.read_only = !write;
    ShardedWal::new(o, count).map_err(|e| match e {
        Error::Locked { .. } => fail(format!(
            "{} is in use by another walfs process (a mount?): write the id to MOUNTPOINT/checkpoints/new instead, or unmount first",
            data.display()
        )),
        Error::ShardCountMismatch { expected, found } => fail(format!(
            "{} holds {found} shards, not {expected}: give --shards {found} (or leave it out)",
            data.display()
        )),
        e => e.into(),
    })
}

fn offsets_text(offsets: &[u64]) -> String {
    offsets
        .iter()
        .enumerate()
        .map(|(s, o)| format!("{}: {o}\n", shard_name(s as u16)))
        .collect()
}

fn when(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    format!("{secs}.{:09}", ns % 1_000_000_000)
}

pub fn run(a: CheckpointArgs) -> Result<i32, Failure> {
    match a.action {
        Action::Create { place, id } => {
            let w = open(&place, true)?;
            w.create_checkpoint(id.as_bytes())?;
            print!(
                "{}",
                offsets_text(&w.load_checkpoint(id.as_bytes())?.offsets)
            );
        }
        Action::List { place } => {
            let w = open(&place, false)?;
            for (id, ts) in w.list_checkpoints() {
                let offsets = w.load_checkpoint(&id)?.offsets;
                let o: Vec<String> = offsets.iter().map(u64::to_string).collect();
                println!("{}\t{}\t{}", show_id(&id), when(ts), o.join(" "));
            }
            report_damage(&w, &place.data);
        }
        Action::Show { place, id } => {
            let w = open(&place, false)?;
            let data = match id {
                Some(id) => w.load_checkpoint(id.as_bytes())?,
                None => w.load_latest_checkpoint()?.1,
            };
            print!("{}", offsets_text(&data.offsets));
        }
        Action::Compact { place, keep } => {
            let w = open(&place, true)?;
            let s = w.compact_checkpoints(keep)?;
            println!(
                "kept {} of {} checkpoint(s); {} byte(s) reclaimed",
                s.checkpoints_after, s.checkpoints_before, s.bytes_reclaimed
            );
        }
    }
    Ok(0)
}

fn report_damage(w: &ShardedWal, data: &Path) {
    for (start, end, why) in w.checkpoint_damage() {
        eprintln!(
            "walfs: checkpoint: {}/checkpoints.log: bytes {start}..{end} are damaged ({why}); the checkpoints listed are the intact ones",
            data.display()
        );
    }
}

pub fn run_prune(a: PruneArgs) -> Result<i32, Failure> {
    let w = open(&a.place, true)?;
    let s = w.prune_before_checkpoint(a.before.as_bytes())?;
    println!(
        "freed {} segment(s) in {} shard(s)",
        s.segments_deleted, s.shards_pruned
    );
    if let Some(h) = s.held_back_by {
        println!(
            "held back by the older checkpoint {:?}: `walfs checkpoint compact` releases it",
            show_id(&h)
        );
    }
    Ok(0)
}
