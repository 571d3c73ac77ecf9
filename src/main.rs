//! The `walfs` command: the mount daemon and the same work without a mount.

mod cli;

fn main() {
    // The daemon says when it is ready and when it stops (INFO); commands
    // speak only when something is wrong. RUST_LOG overrides both.
    let daemon = std::env::args().nth(1).as_deref() == Some("mount");
    let default = if daemon { "warn,walfs=info" } else { "warn" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default)).init();
    std::process::exit(cli::main());
}
