//! A stream directory: the root (the root stream, plus `streams/`) and
//! each `streams/<name>/`. It holds the files of [`FILES`].

use super::{Add, At, FileOps, Handle, Serve, View};
use crate::mount::errno::Errno;
use crate::mount::tree::{Attr, Cache, Kind, Node, FILES};

pub(super) struct StreamDir;

impl FileOps for StreamDir {
    fn attr(&self, v: &View, at: &At) -> Result<Attr, Errno> {
        Ok(Attr::dir(at.node.ino(), v.modes().fixed_dir(), Cache::Live)
            .modified(v.source().modified(at.stream)))
    }

    fn lookup(&self, v: &View, at: &At, name: &[u8]) -> Result<Node, Errno> {
        if at.node == Node::Root && name == b"streams" {
            return Ok(Node::Streams);
        }
        if at.node == Node::Root && name == b"checkpoints" && v.sharded().is_some() {
            return Ok(Node::Checkpoints);
        }
        if at.node == Node::Root && v.root_stream().is_none() {
            return Err(libc::ENOENT);
        }
        v.require_stream(at)?;
        let kind = FILES
            .iter()
            .find(|(n, _)| n.as_bytes() == name)
            .ok_or(libc::ENOENT)?
            .1;
        // `append`: the inode no writer is using (see mount/slots.rs).
        let value = if kind == Kind::Append {
            v.append_value()
        } else {
            0
        };
        Ok(Node::In {
            sno: at.sno,
            root_view: at.node == Node::Root,
            kind,
            value,
        })
    }

    fn readdir(&self, v: &View, at: &At, offset: u64, add: &mut Add) -> Result<(), Errno> {
        let root_view = at.node == Node::Root;
        // A root without a stream holds `streams/` alone.
        let files = if root_view && v.root_stream().is_none() {
            &FILES[..0]
        } else {
            v.require_stream(at)?;
            &FILES[..]
        };
        let mut items: Vec<(&str, Node)> = files
            .iter()
            .map(|&(n, kind)| {
                (
                    n,
                    Node::In {
                        sno: at.sno,
                        root_view,
                        kind,
                        value: 0,
                    },
                )
            })
            .collect();
        if root_view {
            items.push(("streams", Node::Streams));
            if v.sharded().is_some() {
                items.push(("checkpoints", Node::Checkpoints));
            }
        }
        for (i, (n, node)) in items.into_iter().enumerate() {
            let next = i as u64 + 3;
            let is_dir = matches!(
                node,
                Node::Streams
                    | Node::Checkpoints
                    | Node::In {
                        kind: Kind::Entries | Kind::Segments,
                        ..
                    }
            );
            if next > offset && !add(n.as_bytes(), node.ino(), is_dir, next) {
                return Ok(());
            }
        }
        Ok(())
    }

    fn open(&self, _v: &View, at: &At, _read: bool, write: bool) -> Result<(Handle, Serve), Errno> {
        Err(if write && at.node != Node::Root {
            libc::EACCES
        } else {
            libc::EISDIR
        })
    }
}
