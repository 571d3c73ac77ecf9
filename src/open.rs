//! Opening a log: the engine, and shipping when the options ask for it.
//! This sits above both the engine (`wal`) and the replica layer, so that
//! neither imports the other: the engine holds a `dyn Shipping`.

use crate::error::Result;
use crate::storage::{RealStorage, Storage};
use crate::{Wal, WalOptions};
use std::sync::Arc;

impl Wal {
    /// Opens (recovering every stream) or creates the log at
    /// `options.root_path`, on the machine's filesystem, and starts
    /// shipping it when `options.replicate` says so.
    pub fn new(options: WalOptions) -> Result<Wal> {
        Wal::with_storage(options, Arc::new(RealStorage))
    }

    /// Like [`Wal::new`], on any storage (the simulated disk in tests).
    pub fn with_storage(options: WalOptions, storage: Arc<dyn Storage>) -> Result<Wal> {
        let ship = match &options.replicate {
            Some(r) if !options.read_only && !options.standby => Some(r.clone()),
            _ => None,
        };
        let wal = Wal::open_engine(options, storage)?;
        if let Some(r) = ship {
            let replicator = crate::replica::Replicator::start(wal.core(), r)?;
            wal.attach_shipping(Box::new(replicator));
        }
        Ok(wal)
    }
}
